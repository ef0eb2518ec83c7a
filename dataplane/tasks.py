"""Celery entry points of the data plane."""

from celery import shared_task

from core.tasks import positive_id
from dataplane import services


@shared_task(acks_late=True)
def run_read_check_task(app_instance_id: int) -> bool:
    """Read one record of the app from this worker and record the outcome."""
    return services.record_read_check(app_instance_id=positive_id(app_instance_id))


@shared_task(acks_late=True)
def check_org_app_reads(org_id: int) -> dict:
    """The org admin's "Check now": read-check every BYOK app of the org from a worker."""
    return {str(k): v for k, v in services.check_app_reads(org_id=positive_id(org_id)).items()}


@shared_task(acks_late=True)
def check_all_app_reads() -> dict:
    """Beat: read-check every BYOK app, so the BYOK page's "last checked" stays fresh."""
    return {str(k): v for k, v in services.check_app_reads().items()}
