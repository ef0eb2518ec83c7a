"""A scoped revocation's way back, and its deadlines: the admin asks (same step-up as the
kill switch), a worker runs the same checks as an org-wide restore but with the scope's own
encryption context and only the scope's data keys, then the scope is restored or stays
revoked. The health monitor enforces ``scope_lifecycle.DEADLINES`` (stuck checks, the restore
window's reminders, expiry with the destruction of the scope's data keys)."""

from __future__ import annotations

from dataclasses import asdict

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.formats import date_format

from audit.services import record_event
from connections import aws, notifications, signals
from connections.key_usage import recorder_for
from connections.lifecycle import (
    NOTICE_EXPIRED,
    RESTORE_WINDOW_REMINDERS,
    USABLE_STATES,
    TransitionNotAllowed,
)
from connections.models import (
    ByokConnection,
    DataKey,
    DataKeyWrapping,
    ScopedRevocation,
    ScopeKind,
    ScopeState,
)
from connections.scope_lifecycle import (
    DEADLINES,
    OPEN_STATES,
    RESTORABLE_STATES,
    RESTORE_WINDOW_STATES,
    transition,
)
from connections.services._common import SYSTEM_IDENTITY, _keys_in_use, _lock
from connections.services.restore import (
    RestoreCheck,
    _explain,
    round_trip_check,
    unwrap_check,
)
from core.errors import NotFound
from core.tasks import enqueue_on_commit
from orgs.models import AppInstance

R = ScopeState


def _lock_revocation(org_id: int, revocation_id: int) -> tuple[ByokConnection, ScopedRevocation]:
    connection = _lock(org_id)
    revocation = (
        ScopedRevocation.objects.select_for_update(of=("self",), no_key=True)
        .select_related("site", "app_instance__site")
        .filter(pk=revocation_id, organization_id=org_id)
        .first()
    )
    if revocation is None:
        raise NotFound("No such revocation in this organization.")
    return connection, revocation


def restore_scope(*, org, actor, revocation_id: int, source_ip: str = "") -> ScopedRevocation:
    """The admin says the scope may come back: verify in the background (the view has
    checked the step-up)."""
    expire_overdue_scopes(org_id=org.pk)  # commits on its own, like the org-wide restore
    with transaction.atomic():
        connection, revocation = _lock_revocation(org.pk, revocation_id)
        if revocation.state == R.EXPIRED or (
            revocation.state in RESTORE_WINDOW_STATES
            and revocation.restore_deadline <= timezone.now()
        ):
            raise TransitionNotAllowed(
                f"Access to {revocation.label} can only be restored within "
                f"{settings.BYOK_RESTORE_WINDOW_DAYS} days of revocation; it was revoked on "
                f"{date_format(revocation.revoked_at, 'j F Y')}."
            )
        if revocation.state not in RESTORABLE_STATES:
            raise TransitionNotAllowed(
                f"Access to {revocation.label} is {revocation.get_state_display().lower()}; "
                "there is nothing to restore."
            )
        if connection.state not in USABLE_STATES:
            raise TransitionNotAllowed(
                "Key access of the whole organization is "
                f"{connection.get_state_display().lower()}: restore it first."
            )
        transition(revocation, R.RESTORING, reason=f"Restore requested by {actor.email}.")
        record_event(
            org=org,
            actor=actor,
            event_name="RequestRestoreScopedKeyAccess",
            source_ip=source_ip,
            request_parameters={"scope": revocation.as_parameters()},
            response_elements={"scopedRevocationId": revocation.pk, "state": revocation.state},
            recipient_account_id=connection.aws_account_id,
        )
        enqueue_on_commit("connections.tasks.verify_scope_restore_task", revocation.pk)
        return revocation


def scope_apps(revocation: ScopedRevocation) -> list[AppInstance]:
    """The BYOK app instances a site or app scope covers (none for a period)."""
    apps = AppInstance.objects.select_related("site").filter(encryption=AppInstance.Encryption.BYOK)
    if revocation.kind == ScopeKind.SITE:
        return list(apps.filter(site_id=revocation.site_id))
    if revocation.kind == ScopeKind.APP:
        return list(apps.filter(pk=revocation.app_instance_id))
    return []


def scope_data_keys(revocation: ScopedRevocation):
    """The scope's live data keys: every key of its apps, or the period's keys."""
    if revocation.kind == ScopeKind.PERIOD:
        keys = revocation.data_keys.all()
    else:
        keys = DataKey.objects.filter(app_instance__in=[a.pk for a in scope_apps(revocation)])
    return keys.filter(destroyed_at=None)


def _scope_checks(connection: ByokConnection, revocation: ScopedRevocation) -> list[RestoreCheck]:
    """Like the org-wide restore checks, with each of the scope's encryption contexts (a
    customer-side ``Deny`` on a site or app context fails them) and only its data keys."""
    try:
        session = aws.assume_customer_role(
            role_arn=connection.role_arn,
            external_id=connection.external_id,
            on_call=recorder_for(connection.organization),
            cached=False,
        )
    except aws.AwsError as exc:
        return [RestoreCheck("Assume the IAM role", "", False, _explain(exc))]
    checks = [RestoreCheck("Assume the IAM role", "", True, "The trust policy lets us in.")]
    org = str(connection.organization_id)
    contexts = [{"org": org, "site": a.site.name, "app": a.app} for a in scope_apps(revocation)]
    contexts = contexts or [{"org": org, "purpose": "restore-check"}]
    deks = list(scope_data_keys(revocation).values_list("pk", flat=True))
    for key in _keys_in_use(connection):
        region = key.region
        try:
            described = session.describe_key(region, key.key_arn)
            if described.state != "Enabled":
                checks.append(
                    RestoreCheck("Key enabled", region, False, f"The key is {described.state}.")
                )
                continue
            for context in contexts:
                where = f" ({context['site']} / {context['app']})" if "app" in context else ""
                checks.append(
                    round_trip_check(session, key, context, "Encrypt and decrypt" + where)
                )
            wrappings = DataKeyWrapping.objects.filter(
                regional_key=key, retired_at=None, data_key_id__in=deks
            )
            checks.append(unwrap_check(session, key, wrappings, "The scope's data keys unwrap"))
        except aws.AwsError as exc:
            checks.append(RestoreCheck("Key usable", region, False, _explain(exc)))
    return checks


def verify_scope_restore(*, revocation_id: int) -> ScopedRevocation:
    """Run the checks (outside any transaction), then restore the scope or keep it revoked."""
    revocation = ScopedRevocation.objects.select_related("organization").get(pk=revocation_id)
    if revocation.state != R.RESTORING:
        return revocation  # already decided: retries and duplicates are harmless
    connection = ByokConnection.objects.select_related("organization").get(
        organization_id=revocation.organization_id
    )
    checks = _scope_checks(connection, revocation)
    passed = bool(checks) and all(c.passed for c in checks)
    with transaction.atomic():
        connection, revocation = _lock_revocation(revocation.organization_id, revocation_id)
        if revocation.state != R.RESTORING:
            return revocation
        revocation.restore_checks = [asdict(c) for c in checks]
        revocation.save(update_fields=["restore_checks"])
        if passed:
            transition(revocation, R.RESTORED, reason="Access restored and verified.")
            revocation.restored_at = timezone.now()
            revocation.save(update_fields=["restored_at"])
            signals.scope_access_restored.send(
                sender=ScopedRevocation, connection=connection, revocation=revocation
            )
            notice, detail = "restored", f"Data of {revocation.label} is readable again."
        else:
            failing = next(c for c in checks if not c.passed)
            where = f" in {failing.region}" if failing.region else ""
            transition(revocation, R.REVOKED, reason=f"Restore failed{where}: {failing.detail}")
            notice, detail = "restore-failed", f"{failing.name}{where}: {failing.detail}"
        record_event(
            org=connection.organization,
            user_identity=SYSTEM_IDENTITY,
            event_name="VerifyRestoreScopedKeyAccess",
            request_parameters={"scope": revocation.as_parameters()},
            response_elements={
                "scopedRevocationId": revocation.pk,
                "state": revocation.state,
                "checks": [asdict(c) for c in checks],
            },
            error_code="" if passed else "RestoreCheckFailed",
            error_message="" if passed else revocation.state_reason,
            recipient_account_id=connection.aws_account_id,
        )
        transaction.on_commit(
            lambda: notifications.scope_notice(
                connection=connection, revocation=revocation, notice=notice, detail=detail
            )
        )
    return revocation


# --- Deadlines (the health monitor, every minute) ---------------------------------------------


def expire_overdue_scopes(*, org_id: int | None = None, now=None) -> list[int]:
    """Scopes still revoked when their restore window ends: expired, their data keys destroyed."""
    now = now or timezone.now()
    overdue = ScopedRevocation.objects.filter(state__in=OPEN_STATES, restore_deadline__lte=now)
    if org_id is not None:
        overdue = overdue.filter(organization_id=org_id)
    expired = []
    for pk, org in overdue.values_list("pk", "organization_id"):
        with transaction.atomic():
            connection, revocation = _lock_revocation(org, pk)
            if revocation.state not in OPEN_STATES or revocation.restore_deadline > now:
                continue
            days = settings.BYOK_RESTORE_WINDOW_DAYS
            transition(revocation, R.EXPIRED, reason=f"The {days}-day restore window ended.")
            revocation.notices_sent = {**revocation.notices_sent, NOTICE_EXPIRED: now.isoformat()}
            revocation.save(update_fields=["notices_sent"])
            destroyed = _destroy_scope_keys(revocation)
            record_event(
                org=connection.organization,
                user_identity=SYSTEM_IDENTITY,
                event_name="ScopedRestoreWindowExpired",
                request_parameters={"scope": revocation.as_parameters()},
                response_elements={
                    "scopedRevocationId": revocation.pk,
                    "state": revocation.state,
                    "dataKeysDestroyed": destroyed,
                },
                recipient_account_id=connection.aws_account_id,
            )
            transaction.on_commit(
                lambda c=connection, r=revocation: notifications.scope_notice(
                    connection=c, revocation=r, notice=NOTICE_EXPIRED
                )
            )
            expired.append(revocation.pk)
    return expired


def _destroy_scope_keys(revocation: ScopedRevocation) -> int:
    ids = list(scope_data_keys(revocation).values_list("pk", flat=True))
    if ids:
        DataKeyWrapping.objects.filter(data_key_id__in=ids).delete()
        DataKey.objects.filter(pk__in=ids).update(destroyed_at=timezone.now(), is_current=False)
    return len(ids)


def time_out_stuck_scope_restores(*, now=None) -> list[int]:
    now = now or timezone.now()
    deadline = DEADLINES[R.RESTORING]
    stuck = ScopedRevocation.objects.filter(
        state=R.RESTORING, state_changed_at__lte=now - deadline.length
    )
    timed_out = []
    for pk, org in stuck.values_list("pk", "organization_id"):
        with transaction.atomic():
            connection, revocation = _lock_revocation(org, pk)
            if (
                revocation.state != R.RESTORING
                or revocation.state_changed_at > now - deadline.length
            ):
                continue
            minutes = round(deadline.length.total_seconds() / 60)
            reason = (
                f"The restore check did not finish within {minutes} minutes; access stays "
                "revoked. Request the restore again."
            )
            transition(revocation, deadline.then, reason=reason)
            record_event(
                org=connection.organization,
                user_identity=SYSTEM_IDENTITY,
                event_name="ScopedRestoreCheckTimedOut",
                request_parameters={"scope": revocation.as_parameters()},
                response_elements={"scopedRevocationId": revocation.pk, "state": revocation.state},
                error_code="RestoreCheckTimedOut",
                error_message=reason,
                recipient_account_id=connection.aws_account_id,
            )
            transaction.on_commit(
                lambda c=connection, r=revocation, m=reason: notifications.scope_notice(
                    connection=c, revocation=r, notice="restore-timed-out", detail=m
                )
            )
            timed_out.append(pk)
    return timed_out


def send_scope_reminders(*, now=None) -> list[tuple[int, str]]:
    """The reminders before a scope's restore window ends, each sent once (``notices_sent``)."""
    now = now or timezone.now()
    sent = []
    soonest = max(before for _key, before in RESTORE_WINDOW_REMINDERS)
    candidates = ScopedRevocation.objects.filter(
        Q(state__in=RESTORE_WINDOW_STATES),
        restore_deadline__gt=now,
        restore_deadline__lte=now + soonest,
    )
    for pk, org in candidates.values_list("pk", "organization_id"):
        with transaction.atomic():
            connection, revocation = _lock_revocation(org, pk)
            notices = dict(revocation.notices_sent or {})
            due = [
                key
                for key, before in RESTORE_WINDOW_REMINDERS
                if key not in notices and now >= revocation.restore_deadline - before
            ]
            if revocation.state not in RESTORE_WINDOW_STATES or not due:
                continue
            for key in due:
                notices[key] = now.isoformat()
            revocation.notices_sent = notices
            revocation.save(update_fields=["notices_sent"])
            notice = due[-1]
            record_event(
                org=connection.organization,
                user_identity=SYSTEM_IDENTITY,
                event_name="ScopedRestoreWindowReminder",
                request_parameters={"scope": revocation.as_parameters()},
                response_elements={
                    "scopedRevocationId": revocation.pk,
                    "notice": notice,
                    "restoreDeadline": revocation.restore_deadline.isoformat(),
                },
                recipient_account_id=connection.aws_account_id,
            )
            transaction.on_commit(
                lambda c=connection, r=revocation, n=notice: notifications.scope_notice(
                    connection=c, revocation=r, notice=n, now=now
                )
            )
            sent.append((pk, notice))
    return sent


def enforce_scope_deadlines(*, now=None) -> dict[str, list]:
    now = now or timezone.now()
    return {
        "scope_restore_timeouts": time_out_stuck_scope_restores(now=now),
        "scope_reminders": send_scope_reminders(now=now),
        "scope_expired": expire_overdue_scopes(now=now),
    }
