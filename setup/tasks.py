"""Celery entry points of setup: preflight runs and bringing new BYOK apps online."""

import logging

from celery import shared_task
from django.db import OperationalError

from core.tasks import positive_id, positive_ids
from setup import preflight, provisioning
from setup.models import PreflightRun

log = logging.getLogger(__name__)


@shared_task(acks_late=True, autoretry_for=(), max_retries=5)
def activate_app_instances(app_instance_ids: list[int]) -> list[int]:
    """Create each new BYOK app instance's first data key; the instance becomes active."""
    return [
        provisioning.activate_app_instance(app_instance_id=i)
        for i in positive_ids(app_instance_ids)
    ]


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def run_preflight_task(preflight_run_id: int) -> str | None:
    """Run one preflight. Safe to deliver twice: a finished run is left as it is."""
    try:
        return preflight.execute_preflight(preflight_run_id=positive_id(preflight_run_id)).status
    except PreflightRun.DoesNotExist:
        log.warning("Preflight run #%s no longer exists.", preflight_run_id)
        return None
