"""AppDataHealth: when each app's data was last read, and its last refusal — written at most
every few seconds per app, outcome and process, and never allowed to break a read."""

import logging

from django.db import DatabaseError, transaction
from django.utils import timezone

from dataplane.dek_cache import GUARD
from dataplane.models import AppDataHealth

log = logging.getLogger(__name__)

#: At most one AppDataHealth write per app instance and outcome per process this often.
HEALTH_WRITE_INTERVAL_S = 5.0

_health_written: dict[tuple[int, str], float] = {}


def _throttled(app_id: int, outcome: str, force: bool = False) -> bool:
    now = GUARD.clock()
    last = _health_written.get((app_id, outcome))
    if not force and last is not None and now - last < HEALTH_WRITE_INTERVAL_S:
        return True
    _health_written[(app_id, outcome)] = now
    return False


def write_health(app_id: int, **fields) -> None:
    """Update (or create) the app's health row; best effort: it never breaks a read."""
    try:
        with transaction.atomic():
            if not AppDataHealth.objects.filter(app_instance_id=app_id).update(**fields):
                AppDataHealth.objects.get_or_create(app_instance_id=app_id, defaults=fields)
    except DatabaseError:  # health is best effort: it never breaks a read
        log.warning("Could not record data health of app %s", app_id, exc_info=True)


def note_read_ok(app_id: int) -> None:
    if not _throttled(app_id, "ok"):
        write_health(app_id, last_read_at=timezone.now())


def note_failure(app_id: int, reason: str, *, force: bool = False) -> None:
    if not _throttled(app_id, "failure", force):
        write_health(app_id, last_failure_at=timezone.now(), last_failure=reason[:300])


def forget_health_throttle() -> None:
    """Tests: let the next read or failure write its AppDataHealth row again."""
    _health_written.clear()
