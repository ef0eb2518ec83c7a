"""The health monitor (beat): DescribeKey each key in use; revoke, degrade or recover; probe
each BYOK app with its own encryption context (customer-side scoped revocation); then
enforce every deadline (the org's and each scoped revocation's). Each check's outcome is
counted (``byok_health_checks_total``)."""

import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from connections import aws
from connections.key_usage import recorder_for
from connections.lifecycle import (
    MONITORED_STATES,
    USABLE_STATES,
    transition,
)
from connections.models import (
    ByokConnection,
    RegionalKey,
)
from connections.services._common import (
    CAUSE_TO_KEY_STATUS,
    KEY_GONE_STATUSES,
    REVOKED_KEY_STATES,
    SYSTEM_IDENTITY,
    S,
    _keys_in_use,
)
from connections.services.expire import enforce_deadlines
from connections.services.revoke import revoke_after_aws_refusal
from connections.services.scope_monitor import probe_scopes
from connections.services.scope_restore import enforce_scope_deadlines
from core import metrics

log = logging.getLogger(__name__)


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
            "key_disabled": status in KEY_GONE_STATUSES,
            "key_status": status,
            "checked_at": now.isoformat(),
        }
    ByokConnection.objects.filter(pk=connection.pk).update(last_checked_at=now, customer_side=seen)

    if connection.state not in USABLE_STATES:
        metrics.HEALTH_CHECKS.labels(outcome="not-usable").inc()
        return connection.state  # revoked: only the customer-side ticks
    if revoking is not None:
        region, cause, detail, key_arn = revoking
        revoke_after_aws_refusal(
            connection_id=connection.pk,
            region=region or connection.location_info.primary_region,
            cause=cause,
            detail=detail,
            key_arn=key_arn,
            trigger="monitor",
        )
        metrics.HEALTH_CHECKS.labels(outcome="revoked").inc()
        return S.REVOKED
    if session is not None and transient is None:
        # Each site and app with its own encryption context: a customer-side Deny suspends
        # exactly that scope (``scope_monitor``).
        probe_scopes(connection, session)
    state = _record_transient_or_healthy(connection.pk, transient)
    metrics.HEALTH_CHECKS.labels(outcome="transient" if transient else "healthy").inc()
    return state


@transaction.atomic
def _record_transient_or_healthy(connection_id: int, transient: aws.AwsError | None) -> str:
    connection = (
        ByokConnection.objects.select_for_update(of=("self",), no_key=True)
        .select_related("organization")
        .get(pk=connection_id)
    )
    if connection.state not in USABLE_STATES:
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


def monitored_connection_ids() -> list[int]:
    """The connections the monitor checks (active, degraded, revoked …)."""
    return list(
        ByokConnection.objects.filter(state__in=MONITORED_STATES)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def check_connection_health_logged(*, connection_id: int) -> str:
    """:func:`check_connection_health`, with a failure logged and counted instead of raised:
    one broken connection must not stop the others."""
    try:
        return check_connection_health(connection_id=connection_id)
    except ByokConnection.DoesNotExist:
        return "gone"  # deleted since the sweep listed it
    except Exception:  # noqa: BLE001
        log.exception("Health check of connection %s failed", connection_id)
        metrics.HEALTH_CHECKS.labels(outcome="error").inc()
        return "error"


def enforce_monitor_deadlines(*, now=None) -> None:
    """The sweep's second half: every deadline of the org's lifecycle and of scoped
    revocations (stuck restores, the restore window's reminders, expiry)."""
    enforce_deadlines(now=now)
    enforce_scope_deadlines(now=now)
    metrics.HEALTH_MONITOR_LAST_RUN.set(time.time())


def run_health_monitor(*, now=None) -> dict[str, str]:
    """The whole sweep in this thread: check every monitored connection, then enforce every
    deadline. (The beat's task spreads the checks over the workers instead.)"""
    results = {
        str(connection_id): check_connection_health_logged(connection_id=connection_id)
        for connection_id in monitored_connection_ids()
    }
    enforce_monitor_deadlines(now=now)
    return results
