"""The kill switch and its way back: revoke, restore, expire, and the health monitor.

Revocation comes from three places and always ends the same way (connection revoked, every
BYOK app instance suspended, data-key caches purged, notices, an audit event):
- an org admin in the portal (``revoke_key_access``);
- the health monitor seeing a disabled / deleted / denied key (``check_connection_health``);
- the data plane getting a revoking error from KMS (``revoke_after_aws_refusal``).

Re-encryption (``reencryption.job``): a revocation pauses a running job in the same
transaction; a verified restore returns a connection whose job was paused to
``re-encrypting`` (not ``active``) and resumes the job on commit; expiry ends the job. While a
job runs, both key generations hold data, so restore checks and the monitor look at every
key still in use (``retired_at`` empty), not only the current ones.
"""

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.formats import date_format

from audit.services import record_event
from connections import aws, notifications, signals
from connections.key_usage import recorder_for
from connections.lifecycle import TransitionNotAllowed, transition
from connections.models import (
    ByokConnection,
    ConnectionState,
    DataKey,
    DataKeyWrapping,
    RegionalKey,
)
from core.tasks import enqueue_on_commit
from orgs.models import AppInstance

log = logging.getLogger(__name__)
S = ConnectionState
SYSTEM_IDENTITY = {"type": "AWSService", "invokedBy": "byok-portal-monitor"}

# DescribeKey states that mean the customer took the key away.
REVOKED_KEY_STATES = {
    "Disabled": RegionalKey.Status.DISABLED,
    "PendingDeletion": RegionalKey.Status.PENDING_DELETION,
    "PendingReplicaDeletion": RegionalKey.Status.PENDING_DELETION,
    "Unavailable": RegionalKey.Status.DISABLED,
}
KEY_GONE_STATUSES = (
    RegionalKey.Status.DISABLED,
    RegionalKey.Status.PENDING_DELETION,
    RegionalKey.Status.NOT_FOUND,
)
CAUSE_TO_KEY_STATUS = {
    aws.KeyDisabled.cause: RegionalKey.Status.DISABLED,
    aws.KeyInvalidState.cause: RegionalKey.Status.PENDING_DELETION,
    aws.KeyNotFound.cause: RegionalKey.Status.NOT_FOUND,
    aws.AccessDenied.cause: RegionalKey.Status.ACCESS_DENIED,
    aws.RoleUnavailable.cause: RegionalKey.Status.ACCESS_DENIED,
}


def _forget_sessions(org_id: int) -> None:
    """This process drops its cached AWS sessions at once (the data plane's receiver purges its
    data keys; every other process notices within DEK_GUARD_TTL_S)."""
    aws.forget_sessions()


def _set_byok_apps(connection: ByokConnection, status: str, reason: str) -> list[int]:
    apps = AppInstance.objects.select_for_update().filter(
        site__organization_id=connection.organization_id, encryption=AppInstance.Encryption.BYOK
    )
    ids = list(apps.values_list("pk", flat=True))
    AppInstance.objects.filter(pk__in=ids).update(
        status=status, status_reason=reason[:300], updated_at=timezone.now()
    )
    return ids


def _revoke_locked(connection: ByokConnection, *, reason: str) -> ByokConnection:
    now = timezone.now()
    transition(connection, S.REVOKED, reason=reason)
    connection.revoked_at = now
    connection.restore_deadline = now + timedelta(days=settings.BYOK_RESTORE_WINDOW_DAYS)
    connection.transient_failures = 0
    connection.save(update_fields=["revoked_at", "restore_deadline", "transient_failures"])
    _set_byok_apps(connection, AppInstance.Status.SUSPENDED, "Key access revoked.")
    signals.key_access_revoked.send(sender=ByokConnection, connection=connection, reason=reason)
    org_id = connection.organization_id
    transaction.on_commit(lambda: _forget_sessions(org_id))
    deadline = date_format(connection.restore_deadline, "j F Y H:i")
    transaction.on_commit(
        lambda: notifications.connection_notice(
            connection=connection,
            subject="key access revoked: BYOK apps are offline",
            body=f"{reason}\nEvery BYOK app instance is suspended. Access can be restored until "
            f"{deadline} UTC; after that the encrypted data is unrecoverable by design.\n",
        )
    )
    return connection


def _lock(org_id: int) -> ByokConnection:
    return (
        ByokConnection.objects.select_for_update()
        .select_related("organization")
        .get(organization_id=org_id)
    )


@transaction.atomic
def revoke_key_access(*, org, actor, reason: str, source_ip: str = "") -> ByokConnection:
    """The org admin's kill switch (the view has checked the typed name and password)."""
    _forget_sessions(org.pk)  # before the commit too: this process stops using the role now
    connection = _lock(org.pk)
    if connection.state not in (S.ACTIVE, S.DEGRADED, S.REENCRYPTING):
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


@transaction.atomic
def revoke_after_aws_refusal(
    *, connection_id: int, region: str, cause: str, detail: str, key_arn: str = ""
) -> bool:
    """AWS refused a key (disabled, deleted, access denied): revoke now. Idempotent.

    ``key_arn`` names the refused key when known (during a re-encryption a region has two keys
    in use); otherwise the region's current key is marked.
    """
    connection = ByokConnection.objects.select_for_update().get(pk=connection_id)
    status = CAUSE_TO_KEY_STATUS.get(cause, RegionalKey.Status.DISABLED)
    refused = RegionalKey.objects.filter(connection=connection, region=region, retired_at=None)
    refused = refused.filter(key_arn=key_arn) if key_arn else refused.filter(is_current=True)
    refused.update(status=status, status_detail=detail[:500], last_checked_at=timezone.now())
    if connection.state not in (S.ACTIVE, S.DEGRADED, S.REENCRYPTING):
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


def _current_keys(connection):
    return list(RegionalKey.objects.filter(connection=connection, is_current=True))


def _keys_in_use(connection):
    """Current keys, and during a re-encryption the previous ones still holding data keys.
    Ordered so that a region's current key comes last."""
    return list(
        RegionalKey.objects.filter(connection=connection, retired_at=None).order_by(
            "is_current", "region", "generation"
        )
    )


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


# --- Restore ------------------------------------------------------------------------------


def request_restore(*, org, actor) -> ByokConnection:
    """The admin says the trust and keys are back: verify in the background."""
    # Expiry commits on its own: a refused restore must not roll it back.
    expire_overdue_connections(org_id=org.pk)
    with transaction.atomic():
        return _request_restore_locked(org=org, actor=actor)


def _request_restore_locked(*, org, actor) -> ByokConnection:
    connection = _lock(org.pk)
    if connection.state == S.EXPIRED:
        raise TransitionNotAllowed(
            "Access can only be restored within "
            f"{settings.BYOK_RESTORE_WINDOW_DAYS} days of revocation; it was revoked on "
            f"{date_format(connection.revoked_at, 'j F Y')}. The data encrypted under these "
            "keys can no longer be recovered."
        )
    transition(connection, S.RESTORING, reason=f"Restore requested by {actor.email}.")
    record_event(
        org=org,
        actor=actor,
        event_name="RequestRestoreKeyAccess",
        response_elements={"state": connection.state},
        recipient_account_id=connection.aws_account_id,
    )
    enqueue_on_commit("connections.tasks.verify_restore_task", connection.pk)
    return connection


@dataclass
class RestoreCheck:
    name: str
    region: str
    passed: bool
    detail: str


def _restore_checks(connection: ByokConnection) -> list[RestoreCheck]:
    """Every region: key enabled, a GenerateDataKey + Decrypt round trip, existing DEKs unwrap."""

    checks: list[RestoreCheck] = []
    try:
        session = aws.assume_customer_role(
            role_arn=connection.role_arn,
            external_id=connection.external_id,
            on_call=recorder_for(connection.organization),
            cached=False,
        )
    except aws.AwsError as exc:
        return [RestoreCheck("Assume the IAM role", "", False, _explain(exc))]
    checks.append(RestoreCheck("Assume the IAM role", "", True, "The trust policy lets us in."))
    context = {"org": str(connection.organization_id), "purpose": "restore-check"}
    for key in _keys_in_use(connection):
        region = key.region
        try:
            described = session.describe_key(region, key.key_arn)
            if described.state != "Enabled":
                checks.append(
                    RestoreCheck("Key enabled", region, False, f"The key is {described.state}.")
                )
                continue
            checks.append(RestoreCheck("Key enabled", region, True, "Enabled."))
            plaintext, blob, _ = session.generate_data_key(region, key.key_arn, context)
            ok = session.decrypt(region, key.key_arn, blob, context) == plaintext
            del plaintext
            checks.append(
                RestoreCheck(
                    "Encrypt and decrypt",
                    region,
                    ok,
                    "Round trip succeeded." if ok else "Mismatch.",
                )
            )
            wrappings = DataKeyWrapping.objects.filter(
                regional_key=key, retired_at=None, data_key__destroyed_at=None
            ).select_related("data_key")
            unwrapped = 0
            for wrapping in wrappings.iterator():
                session.decrypt(
                    region, key.key_arn, bytes(wrapping.blob), wrapping.data_key.encryption_context
                )
                unwrapped += 1
            checks.append(
                RestoreCheck(
                    "Existing data keys unwrap", region, True, f"{unwrapped} data keys unwrap."
                )
            )
        except aws.AwsError as exc:
            checks.append(RestoreCheck("Key usable", region, False, _explain(exc)))
    return checks


def _explain(exc: aws.AwsError) -> str:
    messages = {
        aws.RoleUnavailable: "We cannot assume the role: allow the vendor in its trust policy.",
        aws.KeyDisabled: "The key is disabled: enable it in AWS KMS.",
        aws.KeyInvalidState: "The key is pending deletion: cancel the deletion and enable it.",
        aws.KeyNotFound: "The key no longer exists.",
        aws.AccessDenied: "The key policy does not let the role use the key.",
        aws.Throttled: "AWS throttled us; try again in a few minutes.",
        aws.Unreachable: "AWS did not answer; try again in a few minutes.",
    }
    return messages.get(type(exc), "AWS refused the request.") + f" ({exc.code or exc.cause})"


def verify_restore(*, connection_id: int) -> ByokConnection:
    """Run the restore checks (outside any transaction), then resume or fall back to revoked."""
    connection = ByokConnection.objects.select_related("organization").get(pk=connection_id)
    if connection.state != S.RESTORING:
        return connection  # already decided: retries and duplicates are harmless
    checks = _restore_checks(connection)
    passed = bool(checks) and all(c.passed for c in checks)
    with transaction.atomic():
        connection = _lock(connection.organization_id)
        if connection.state != S.RESTORING:
            return connection
        connection.restore_checks = [asdict(c) for c in checks]
        connection.save(update_fields=["restore_checks"])
        if passed:
            transition(connection, S.ACTIVE, reason="Access restored and verified.")
            connection.revoked_at = None
            connection.restore_deadline = None
            connection.save(update_fields=["revoked_at", "restore_deadline"])
            RegionalKey.objects.filter(connection=connection, retired_at=None).update(
                status=RegionalKey.Status.ENABLED, status_detail="", last_checked_at=timezone.now()
            )
            _set_byok_apps(connection, AppInstance.Status.ACTIVE, "")
            # A re-encryption paused by the revocation takes the connection back to
            # re-encrypting and resumes from its checkpoint (reencryption's receiver).
            signals.key_access_restored.send(sender=ByokConnection, connection=connection)
            subject, body = "key access restored", "Every BYOK app instance is back online.\n"
        else:
            failing = next(c for c in checks if not c.passed)
            where = f" in {failing.region}" if failing.region else ""
            transition(connection, S.REVOKED, reason=f"Restore failed{where}: {failing.detail}")
            subject, body = "restore failed", f"{failing.name}{where}: {failing.detail}\n"
        record_event(
            org=connection.organization,
            user_identity=SYSTEM_IDENTITY,
            event_name="VerifyRestoreKeyAccess",
            response_elements={"state": connection.state, "checks": [asdict(c) for c in checks]},
            error_code="" if passed else "RestoreCheckFailed",
            error_message="" if passed else connection.state_reason,
            recipient_account_id=connection.aws_account_id,
        )
        transaction.on_commit(
            lambda: notifications.connection_notice(
                connection=connection, subject=subject, body=body
            )
        )
    return connection


# --- Expiry -------------------------------------------------------------------------------


def _expire_locked(connection: ByokConnection) -> None:
    days = settings.BYOK_RESTORE_WINDOW_DAYS
    transition(connection, S.EXPIRED, reason=f"The {days}-day restore window ended.")
    signals.key_access_expired.send(sender=ByokConnection, connection=connection)
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
        ByokConnection.objects.select_for_update()
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


# --- Health monitor -------------------------------------------------------------------------

MONITORED_STATES = (S.ACTIVE, S.DEGRADED, S.REENCRYPTING, S.REVOKED)


def check_connection_health(*, connection_id: int) -> str:
    """DescribeKey each current regional key; revoke, degrade or recover accordingly.

    For revoked connections it only records what the customer has done in AWS (for the revoke
    page's ticks): it never revokes twice nor restores by itself.
    """

    connection = ByokConnection.objects.select_related("organization").get(pk=connection_id)
    if connection.state not in MONITORED_STATES:
        return connection.state
    now = timezone.now()
    seen: dict[str, dict] = {}
    revoking: tuple[str, str, str, str] | None = None
    transient: aws.AwsError | None = None
    try:
        session = aws.assume_customer_role(
            role_arn=connection.role_arn,
            external_id=connection.external_id,
            on_call=recorder_for(connection.organization),
            cached=False,
        )
        trust_denied = False
    except aws.AwsError as exc:
        session = None
        trust_denied = isinstance(exc, aws.RoleUnavailable | aws.AccessDenied)
        if exc.transient:
            transient = exc
        elif trust_denied:
            revoking = ("", exc.cause, f"AssumeRole refused: {exc.message}", "")
    for key in _keys_in_use(connection):
        status, detail = RegionalKey.Status.UNKNOWN, ""
        if session is not None:
            try:
                described = session.describe_key(key.region, key.key_arn)
                status = REVOKED_KEY_STATES.get(described.state, RegionalKey.Status.ENABLED)
                detail = f"KeyState {described.state}"
                if status != RegionalKey.Status.ENABLED and revoking is None:
                    cause = (
                        aws.KeyDisabled.cause
                        if status == RegionalKey.Status.DISABLED
                        else aws.KeyInvalidState.cause
                    )
                    revoking = (key.region, cause, detail, key.key_arn)
            except aws.AwsError as exc:
                detail = f"{exc.code or exc.cause}: {exc.message}"[:500]
                if exc.transient:
                    status = RegionalKey.Status.UNREACHABLE
                    transient = transient or exc
                else:
                    status = CAUSE_TO_KEY_STATUS.get(exc.cause, RegionalKey.Status.ACCESS_DENIED)
                    revoking = revoking or (key.region, exc.cause, detail, key.key_arn)
        elif trust_denied:
            status, detail = RegionalKey.Status.ACCESS_DENIED, "The role's trust policy denies us."
        RegionalKey.objects.filter(pk=key.pk).update(
            status=status, status_detail=detail[:500], last_checked_at=now
        )
        seen[key.region] = {
            "trust_denied": trust_denied,
            "key_disabled": status
            in (
                RegionalKey.Status.DISABLED,
                RegionalKey.Status.PENDING_DELETION,
                RegionalKey.Status.NOT_FOUND,
            ),
            "key_status": status,
            "checked_at": now.isoformat(),
        }
    ByokConnection.objects.filter(pk=connection.pk).update(last_checked_at=now, customer_side=seen)

    if connection.state in (S.REVOKED,):
        return connection.state
    if revoking is not None:
        region, cause, detail, key_arn = revoking
        revoke_after_aws_refusal(
            connection_id=connection.pk,
            region=region or connection.location_info.primary_region,
            cause=cause,
            detail=detail,
            key_arn=key_arn,
        )
        return S.REVOKED
    return _record_transient_or_healthy(connection.pk, transient)


@transaction.atomic
def _record_transient_or_healthy(connection_id: int, transient: aws.AwsError | None) -> str:
    connection = (
        ByokConnection.objects.select_for_update()
        .select_related("organization")
        .get(pk=connection_id)
    )
    if connection.state not in (S.ACTIVE, S.DEGRADED, S.REENCRYPTING):
        return connection.state
    if transient is None:
        connection.transient_failures = 0
        connection.save(update_fields=["transient_failures"])
        if connection.state == S.DEGRADED:
            transition(connection, S.ACTIVE, reason="AWS answers normally again.")
            record_event(
                org=connection.organization,
                user_identity=SYSTEM_IDENTITY,
                event_name="KeyAccessHealthy",
                response_elements={"state": connection.state},
                recipient_account_id=connection.aws_account_id,
            )
        return connection.state
    connection.transient_failures += 1
    connection.save(update_fields=["transient_failures"])
    # One blip is noise: only consecutive transient failures degrade, and never revoke.
    if (
        connection.transient_failures >= settings.HEALTH_DEGRADED_AFTER
        and connection.state == S.ACTIVE
    ):
        transition(
            connection,
            S.DEGRADED,
            reason=f"AWS is {transient.cause} ({transient.code}); apps stay online on cached keys.",
        )
        record_event(
            org=connection.organization,
            user_identity=SYSTEM_IDENTITY,
            event_name="KeyAccessDegraded",
            error_code=transient.code or transient.cause,
            error_message=transient.message[:300],
            response_elements={"state": connection.state},
            recipient_account_id=connection.aws_account_id,
        )
    return connection.state


def run_health_monitor() -> dict[str, str]:
    results = {}
    for connection_id in ByokConnection.objects.filter(state__in=MONITORED_STATES).values_list(
        "pk", flat=True
    ):
        try:
            results[str(connection_id)] = check_connection_health(connection_id=connection_id)
        except Exception:  # noqa: BLE001 — one broken connection must not stop the others
            log.exception("Health check of connection %s failed", connection_id)
            results[str(connection_id)] = "error"
    expire_overdue_connections()
    return results
