"""Celery entry points of the connection lifecycle: thin, idempotent wrappers over services.

Tasks take ids, validate them, and re-read state first, so a retry or a duplicate delivery
(acks late) does no harm.
"""

from celery import shared_task

from connections import services
from core.tasks import positive_id


@shared_task(acks_late=True)
def run_health_monitor() -> dict:
    """Beat (every HEALTH_MONITOR_INTERVAL_S): one :func:`check_connection_health_task` per
    monitored connection, then every deadline of ``lifecycle.DEADLINES`` and of scoped
    revocations (stuck restores, the restore window's reminders, expiry).

    One short task per connection, not the whole sweep in one: the checks spread over the
    pool, and no pool process is held for every org's KMS round trips in a row (a process
    busy that long is as slow to take its next task, a kill-switch read included)."""
    connection_ids = services.monitored_connection_ids()
    for connection_id in connection_ids:
        check_connection_health_task.delay(connection_id)
    services.enforce_monitor_deadlines()
    return {"checks_queued": len(connection_ids)}


@shared_task(acks_late=True)
def check_connection_health_task(connection_id: int) -> str:
    return services.check_connection_health_logged(connection_id=positive_id(connection_id))


@shared_task(acks_late=True)
def destroy_data_keys_task(connection_id: int) -> int:
    return services.destroy_data_keys(connection_id=positive_id(connection_id))


@shared_task(acks_late=True)
def verify_restore_task(connection_id: int) -> str:
    return services.verify_restore(connection_id=positive_id(connection_id)).state


@shared_task(acks_late=True)
def verify_scope_restore_task(revocation_id: int) -> str:
    return services.verify_scope_restore(revocation_id=positive_id(revocation_id)).state
