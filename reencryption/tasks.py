"""Celery entry points of re-encryption."""

import logging

from celery import shared_task

from core.tasks import positive_id
from reencryption import job
from reencryption.models import ReencryptionPreflight
from reencryption.services import execute_reencryption_preflight

log = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_reencryption_job_task(job_id: int) -> str:
    """Run or resume one re-encryption job. Delivered twice, early or after a crash: harmless
    (the job's lease and checkpoint decide)."""
    return job.run_job(job_id=positive_id(job_id))


@shared_task(acks_late=True, ignore_result=True)
def sweep_reencryption_jobs() -> list[int]:
    """Beat: enqueue due scheduled jobs and running jobs whose worker is gone."""
    return job.sweep_jobs()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_reencryption_preflight_task(preflight_id: int) -> str:
    try:
        return execute_reencryption_preflight(preflight_id=positive_id(preflight_id)).status
    except ReencryptionPreflight.DoesNotExist:
        log.warning("Re-encryption preflight #%s no longer exists.", preflight_id)
        return ""
