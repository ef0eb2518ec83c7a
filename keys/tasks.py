"""Celery entry points of the keys app: thin, idempotent wrappers over services.

Tasks take ids, validate them, and re-read state first, so a retry or a duplicate delivery
(acks late) does no harm.
"""

import logging

from celery import shared_task

from keys import revocation
from keys.preflight import run_preflight_task  # noqa: F401  (registers the task)

log = logging.getLogger(__name__)


def _positive_id(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive integer id, got {value!r}")
    return value


@shared_task(acks_late=True)
def run_health_monitor() -> dict:
    """Beat: check every monitored connection's keys, expire overdue revocations."""
    return revocation.run_health_monitor()


@shared_task(acks_late=True)
def check_connection_health_task(connection_id: int) -> str:
    return revocation.check_connection_health(connection_id=_positive_id(connection_id))


@shared_task(acks_late=True)
def verify_restore_task(connection_id: int) -> str:
    return revocation.verify_restore(connection_id=_positive_id(connection_id)).state


@shared_task(acks_late=True)
def destroy_data_keys_task(connection_id: int) -> int:
    return revocation.destroy_data_keys(connection_id=_positive_id(connection_id))


@shared_task(acks_late=True, autoretry_for=(), max_retries=5)
def activate_app_instances(app_instance_ids: list[int]) -> list[int]:
    """Create each new BYOK app instance's first data key; the instance becomes active."""
    from keys.provisioning import activate_app_instance

    if not isinstance(app_instance_ids, list):
        raise ValueError("expected a list of app instance ids")
    return [activate_app_instance(app_instance_id=_positive_id(i)) for i in app_instance_ids]


@shared_task(acks_late=True)
def run_read_check_task(app_instance_id: int) -> bool:
    """Read one record of the app from this worker and audit the outcome (support diagnostics)."""
    from keys.provisioning import record_read_check

    return record_read_check(app_instance_id=_positive_id(app_instance_id))


# --- Re-encryption -------------------------------------------------------------------------


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_reencryption_job_task(job_id: int) -> str:
    """Run or resume one re-encryption job. Delivered twice, early or after a crash: harmless
    (the job's lease and checkpoint decide; see keys/reencryption_job.py)."""
    from keys.reencryption_job import run_job

    return run_job(job_id=_positive_id(job_id))


@shared_task(acks_late=True, ignore_result=True)
def sweep_reencryption_jobs() -> list[int]:
    """Beat: enqueue due scheduled jobs and running jobs whose worker is gone."""
    from keys.reencryption_job import sweep_jobs

    return sweep_jobs()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_reencryption_preflight_task(preflight_id: int) -> str:
    from keys.models import ReencryptionPreflight
    from keys.reencryption import execute_reencryption_preflight

    try:
        return execute_reencryption_preflight(preflight_id=_positive_id(preflight_id)).status
    except ReencryptionPreflight.DoesNotExist:
        log.warning("Re-encryption preflight #%s no longer exists.", preflight_id)
        return ""
