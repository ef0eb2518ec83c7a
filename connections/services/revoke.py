"""Revocation: by an org admin (the kill switch), the monitor or an AWS refusal in the data
plane; it always ends the same way and starts the restore window.

Each one is counted with its duration (``core.metrics``: ``byok_revocations_total``,
``byok_revocation_duration_seconds``, commit included when the caller holds no transaction).
"""

import time

from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from connections import notifications, signals
from connections.lifecycle import (
    NOTICE_REVOKED,
    REVOCABLE_STATES,
    USABLE_STATES,
    TransitionNotAllowed,
    restore_window_length,
    transition,
)
from connections.models import (
    ByokConnection,
    RegionalKey,
)
from connections.services._common import (
    CAUSE_TO_KEY_STATUS,
    SYSTEM_IDENTITY,
    S,
    _current_keys,
    _forget_sessions,
    _lock,
    _set_byok_apps,
)
from core import metrics
from core.tasks import enqueue_on_commit
from orgs.models import AppInstance


def _revoke_locked(connection: ByokConnection, *, reason: str) -> ByokConnection:
    """Revoke and start the restore window (a new window: its notices start afresh)."""
    now = timezone.now()
    transition(connection, S.REVOKED, reason=reason)
    connection.revoked_at = now
    connection.restore_deadline = now + restore_window_length()
    connection.transient_failures = 0
    connection.notices_sent = {NOTICE_REVOKED: now.isoformat()}
    connection.save(
        update_fields=["revoked_at", "restore_deadline", "transient_failures", "notices_sent"]
    )
    _set_byok_apps(connection, AppInstance.Status.SUSPENDED, "Key access revoked.")
    signals.key_access_revoked.send(sender=ByokConnection, connection=connection, reason=reason)
    org_id = connection.organization_id
    transaction.on_commit(lambda: _forget_sessions(org_id))
    transaction.on_commit(
        lambda: notifications.restore_window_notice(
            connection=connection, notice=NOTICE_REVOKED, detail=reason
        )
    )
    return connection


def revoke_key_access(*, org, actor, reason: str, source_ip: str = "") -> ByokConnection:
    """The org admin's kill switch (the view has checked the typed name and password)."""
    started = time.perf_counter()
    try:
        connection = _revoke_key_access(org=org, actor=actor, reason=reason, source_ip=source_ip)
    except TransitionNotAllowed:
        metrics.revocation_done("admin", "refused")
        raise
    except Exception:
        metrics.revocation_done("admin", "error")
        raise
    metrics.revocation_done("admin", "revoked", started)
    return connection


@transaction.atomic
def _revoke_key_access(*, org, actor, reason: str, source_ip: str) -> ByokConnection:
    _forget_sessions(org.pk)  # before the commit too: this process stops using the role now
    connection = _lock(org.pk)
    if connection.state not in REVOCABLE_STATES:
        raise TransitionNotAllowed(
            f"Key access is {connection.get_state_display().lower()}; there is nothing to revoke."
        )
    _revoke_locked(connection, reason=f"Revoked by {actor.email}: {reason}")
    record_event(
        org=org,
        actor=actor,
        event_name="RevokeKeyAccess",
        source_ip=source_ip,
        request_parameters={"reason": reason},
        response_elements={
            "state": connection.state,
            "restoreDeadline": connection.restore_deadline.isoformat(),
        },
        resources=[{"type": "AWS::KMS::Key", "ARN": k.key_arn} for k in _current_keys(connection)],
        recipient_account_id=connection.aws_account_id,
    )
    return connection


def revoke_after_aws_refusal(
    *,
    connection_id: int,
    region: str,
    cause: str,
    detail: str,
    key_arn: str = "",
    trigger: str = "aws-refusal",
) -> bool:
    """AWS refused a key (disabled, deleted, access denied): revoke now. Idempotent.

    ``key_arn`` names the refused key when known (during a re-encryption a region has two keys
    in use); otherwise the region's current key is marked. ``trigger`` names who saw the
    refusal, for the metrics (``aws-refusal``: the data plane or a job; ``monitor``).
    """
    started = time.perf_counter()
    try:
        revoked = _revoke_after_aws_refusal(
            connection_id=connection_id, region=region, cause=cause, detail=detail, key_arn=key_arn
        )
    except Exception:
        metrics.revocation_done(trigger, "error")
        raise
    if revoked:
        metrics.revocation_done(trigger, "revoked", started)
    else:
        metrics.revocation_done(trigger, "unchanged")
    return revoked


@transaction.atomic
def _revoke_after_aws_refusal(
    *, connection_id: int, region: str, cause: str, detail: str, key_arn: str
) -> bool:
    connection = ByokConnection.objects.select_for_update(no_key=True).get(pk=connection_id)
    status = CAUSE_TO_KEY_STATUS.get(cause, RegionalKey.Status.DISABLED)
    refused = RegionalKey.objects.filter(connection=connection, region=region, retired_at=None)
    refused = refused.filter(key_arn=key_arn) if key_arn else refused.filter(is_current=True)
    refused.update(status=status, status_detail=detail[:500], last_checked_at=timezone.now())
    if connection.state not in USABLE_STATES:
        return False
    label = RegionalKey.Status(status).label.lower()
    _revoke_locked(connection, reason=f"Key in {region}: {label} ({detail})"[:500])
    record_event(
        org=connection.organization,
        user_identity=SYSTEM_IDENTITY,
        event_name="KeyAccessLost",
        aws_region=region,
        request_parameters={"cause": cause},
        response_elements={"state": connection.state, "detail": detail[:300]},
        error_code=cause,
        error_message=detail[:300],
        resources=[{"type": "AWS::KMS::Key", "ARN": k.key_arn} for k in _current_keys(connection)],
        recipient_account_id=connection.aws_account_id,
    )
    return True


def request_read_checks(*, org, actor, source_ip: str = "") -> None:
    """The org admin's "Check now": read-check every BYOK app from a worker (the data plane's
    task); the BYOK page then shows the result and when it ran."""
    record_event(
        org=org,
        actor=actor,
        event_name="RequestAppReadCheck",
        source_ip=source_ip,
        read_only=True,
    )
    enqueue_on_commit("dataplane.tasks.check_org_app_reads", org.pk)
