"""Deadlines of timed states (``lifecycle.DEADLINES``): stuck restores, the restore window's
reminders (each once), expiry and the destruction of the data keys."""

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from connections import notifications, signals
from connections.lifecycle import (
    DEADLINES,
    NOTICE_EXPIRED,
    RESTORE_WINDOW_REMINDERS,
    RESTORE_WINDOW_STATES,
    transition,
)
from connections.models import (
    ByokConnection,
    DataKey,
    DataKeyWrapping,
)
from connections.services._common import (
    SYSTEM_IDENTITY,
    S,
    _lock,
)
from core.tasks import enqueue_on_commit


def _expire_locked(connection: ByokConnection) -> None:
    days = settings.BYOK_RESTORE_WINDOW_DAYS
    transition(
        connection, DEADLINES[S.REVOKED].then, reason=f"The {days}-day restore window ended."
    )
    connection.notices_sent = {
        **(connection.notices_sent or {}),
        NOTICE_EXPIRED: timezone.now().isoformat(),
    }
    connection.save(update_fields=["notices_sent"])
    signals.key_access_expired.send(sender=ByokConnection, connection=connection)
    transaction.on_commit(
        lambda: notifications.restore_window_notice(connection=connection, notice=NOTICE_EXPIRED)
    )
    record_event(
        org=connection.organization,
        user_identity=SYSTEM_IDENTITY,
        event_name="RestoreWindowExpired",
        response_elements={"state": connection.state},
        recipient_account_id=connection.aws_account_id,
    )
    enqueue_on_commit("connections.tasks.destroy_data_keys_task", connection.pk)


def expire_overdue_connections(*, org_id: int | None = None, now=None) -> list[int]:
    now = now or timezone.now()
    expired = []
    overdue = ByokConnection.objects.filter(state=S.REVOKED, restore_deadline__lte=now)
    if org_id is not None:
        overdue = overdue.filter(organization_id=org_id)
    for org_id in overdue.values_list("organization_id", flat=True):
        with transaction.atomic():
            connection = _lock(org_id)
            if connection.state == S.REVOKED and connection.restore_deadline <= now:
                _expire_locked(connection)
                expired.append(connection.pk)
    return expired


@transaction.atomic
def destroy_data_keys(*, connection_id: int) -> int:
    """After expiry: erase every wrapped DEK. The data becomes unrecoverable, by design."""
    connection = (
        ByokConnection.objects.select_for_update(of=("self",), no_key=True)
        .select_related("organization")
        .get(pk=connection_id)
    )
    if connection.state != S.EXPIRED:
        return 0
    data_keys = DataKey.objects.filter(
        app_instance__site__organization_id=connection.organization_id, destroyed_at=None
    )
    ids = list(data_keys.values_list("pk", flat=True))
    if not ids:
        return 0
    wrappings = DataKeyWrapping.objects.filter(data_key_id__in=ids).delete()[0]
    DataKey.objects.filter(pk__in=ids).update(destroyed_at=timezone.now(), is_current=False)
    record_event(
        org=connection.organization,
        user_identity=SYSTEM_IDENTITY,
        event_name="DestroyDataKeys",
        response_elements={"dataKeys": len(ids), "wrappedKeysErased": wrappings},
        recipient_account_id=connection.aws_account_id,
    )
    return len(ids)


def time_out_stuck_restores(*, now=None) -> list[int]:
    """``restoring`` past its deadline (the check task was lost or hangs): back to revoked,
    with the reason shown on the pages, audited and sent to the admins. The admin can ask
    again while the restore window is open; the window's own deadline still applies."""
    now = now or timezone.now()
    deadline = DEADLINES[S.RESTORING]
    stuck = ByokConnection.objects.filter(
        state=S.RESTORING, state_changed_at__lte=now - deadline.length
    )
    timed_out = []
    for org_id in stuck.values_list("organization_id", flat=True):
        with transaction.atomic():
            connection = _lock(org_id)
            if connection.state != S.RESTORING or connection.state_changed_at > now - (
                deadline.length
            ):
                continue
            minutes = round(deadline.length.total_seconds() / 60)
            reason = (
                f"The restore check did not finish within {minutes} minutes; access stays "
                "revoked. Request the restore again."
            )
            transition(connection, deadline.then, reason=reason)
            record_event(
                org=connection.organization,
                user_identity=SYSTEM_IDENTITY,
                event_name="RestoreCheckTimedOut",
                response_elements={"state": connection.state},
                error_code="RestoreCheckTimedOut",
                error_message=reason,
                recipient_account_id=connection.aws_account_id,
            )
            transaction.on_commit(
                lambda c=connection, r=reason: notifications.connection_notice(
                    connection=c, subject="restore check timed out", body=r + "\n"
                )
            )
            timed_out.append(connection.pk)
    return timed_out


def send_restore_window_reminders(*, now=None) -> list[tuple[int, str]]:
    """The reminders before the restore window ends, each sent once per revocation (recorded
    in ``notices_sent``) however often the monitor runs. If several fell due at once (the
    monitor was down), only the most urgent is sent; the others are marked as passed."""
    now = now or timezone.now()
    sent = []
    candidates = ByokConnection.objects.filter(
        state__in=RESTORE_WINDOW_STATES, restore_deadline__gt=now
    )
    for org_id, deadline, already in candidates.values_list(
        "organization_id", "restore_deadline", "notices_sent"
    ):
        if not _due_reminders(deadline, already or {}, now):
            continue
        with transaction.atomic():
            connection = _lock(org_id)
            if connection.state not in RESTORE_WINDOW_STATES or not connection.restore_deadline:
                continue
            notices = dict(connection.notices_sent or {})
            due = _due_reminders(connection.restore_deadline, notices, now)
            if not due:
                continue
            for key in due:
                notices[key] = now.isoformat()
            connection.notices_sent = notices
            connection.save(update_fields=["notices_sent"])
            notice = due[-1]
            record_event(
                org=connection.organization,
                user_identity=SYSTEM_IDENTITY,
                event_name="RestoreWindowReminder",
                response_elements={
                    "state": connection.state,
                    "notice": notice,
                    "restoreDeadline": connection.restore_deadline.isoformat(),
                },
                recipient_account_id=connection.aws_account_id,
            )
            transaction.on_commit(
                lambda c=connection, n=notice: notifications.restore_window_notice(
                    connection=c, notice=n, now=now
                )
            )
            sent.append((connection.pk, notice))
    return sent


def _due_reminders(deadline, notices: dict, now) -> list[str]:
    """Reminder keys due and not sent yet, least urgent first."""
    return [
        key
        for key, before in RESTORE_WINDOW_REMINDERS
        if key not in notices and now >= deadline - before
    ]


def enforce_deadlines(*, now=None) -> dict[str, list]:
    """Every timed state of ``lifecycle.DEADLINES`` leaves by its deadline (run by the beat)."""
    now = now or timezone.now()
    return {
        "restore_timeouts": time_out_stuck_restores(now=now),
        "reminders": send_restore_window_reminders(now=now),
        "expired": expire_overdue_connections(now=now),
    }
