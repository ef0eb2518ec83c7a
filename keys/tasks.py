"""Celery entry points of the keys app: thin, idempotent wrappers over services."""

from celery import shared_task


@shared_task(acks_late=True)
def run_health_monitor() -> int:
    """Checks every active connection's keys. Filled in by the health-monitor work (issue 4)."""
    return 0
