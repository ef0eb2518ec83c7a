"""Celery entry points of the sign-in hardening (beat: ``CELERY_BEAT_SCHEDULE``)."""

from celery import shared_task

from security import failed_sign_ins


@shared_task(acks_late=True)
def report_closed_failure_windows() -> int:
    """Every minute: write the counted event of each closed window of failures. Idempotent."""
    return failed_sign_ins.report_closed_windows()
