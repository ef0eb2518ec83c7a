"""Restore: the admin asks, a worker verifies every region, then active or back to revoked."""

from dataclasses import asdict, dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.formats import date_format

from audit.services import record_event
from connections import aws, notifications, signals
from connections.key_usage import recorder_for
from connections.lifecycle import (
    DEADLINES,
    RESTORABLE_STATES,
    TransitionNotAllowed,
    transition,
)
from connections.models import (
    ByokConnection,
    DataKeyWrapping,
    RegionalKey,
)
from connections.services._common import (
    SYSTEM_IDENTITY,
    S,
    _keys_in_use,
    _lock,
    _set_byok_apps,
)
from connections.services.expire import expire_overdue_connections
from core.tasks import enqueue_on_commit
from orgs.models import AppInstance


def request_restore(*, org, actor) -> ByokConnection:
    """The admin says the trust and keys are back: verify in the background."""
    # Expiry commits on its own: a refused restore must not roll it back.
    expire_overdue_connections(org_id=org.pk)
    with transaction.atomic():
        return _request_restore_locked(org=org, actor=actor)


def _request_restore_locked(*, org, actor) -> ByokConnection:
    connection = _lock(org.pk)
    if connection.state == DEADLINES[S.REVOKED].then:
        raise TransitionNotAllowed(
            "Access can only be restored within "
            f"{settings.BYOK_RESTORE_WINDOW_DAYS} days of revocation; it was revoked on "
            f"{date_format(connection.revoked_at, 'j F Y')}. The data encrypted under these "
            "keys can no longer be recovered."
        )
    if connection.state not in RESTORABLE_STATES:
        raise TransitionNotAllowed(
            f"Key access is {connection.get_state_display().lower()}; there is nothing to restore."
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
            checks.append(round_trip_check(session, key, context, "Encrypt and decrypt"))
            wrappings = DataKeyWrapping.objects.filter(
                regional_key=key, retired_at=None, data_key__destroyed_at=None
            )
            checks.append(unwrap_check(session, key, wrappings, "Existing data keys unwrap"))
        except aws.AwsError as exc:
            checks.append(RestoreCheck("Key usable", region, False, _explain(exc)))
    return checks


def round_trip_check(session, key: RegionalKey, context: dict, name: str) -> RestoreCheck:
    """A fresh data key generated and decrypted again under ``key`` with ``context``."""
    plaintext, blob, _ = session.generate_data_key(key.region, key.key_arn, context)
    ok = session.decrypt(key.region, key.key_arn, blob, context) == plaintext
    del plaintext
    return RestoreCheck(name, key.region, ok, "Round trip succeeded." if ok else "Mismatch.")


def unwrap_check(session, key: RegionalKey, wrappings, name: str) -> RestoreCheck:
    """Every stored copy in ``wrappings`` (of ``key``) decrypts: the data stays readable."""
    unwrapped = 0
    for wrapping in wrappings.select_related("data_key").iterator():
        session.decrypt(
            key.region, key.key_arn, bytes(wrapping.blob), wrapping.data_key.encryption_context
        )
        unwrapped += 1
    return RestoreCheck(name, key.region, True, f"{unwrapped} data keys unwrap.")


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
            connection.notices_sent = {}
            connection.save(update_fields=["revoked_at", "restore_deadline", "notices_sent"])
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
