"""Scoped revocation: take away one site, one app instance or one period of data, leaving
everything else of the org working. The state machine is ``connections.scope_lifecycle``.

A period maps to data keys exactly: every data key of a BYOK app of the org whose *use
interval* intersects the period is revoked. A key's use interval runs from its creation to the
creation of the app's next key (data keys are replaced about daily, and by a re-encryption),
or to the revocation for a key still in use — which then stops being the app's current key,
so new records are written under a fresh one. The revoked span (``covered_from`` …
``covered_to``) is the union of those intervals: it contains the requested period, and the
granularity is one data key (about a day per app).

Every change is audited with the scope in ``requestParameters``, told to the org's admins,
and sent as ``signals.scope_access_revoked`` (the data plane drops the scope's keys from this
process at once; every other process refuses within ``DEK_GUARD_TTL_S`` through its access
guard; a running re-encryption pauses).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import record_event
from connections import notifications, signals
from connections.lifecycle import (
    NOTICE_REVOKED,
    USABLE_STATES,
    TransitionNotAllowed,
    restore_window_length,
)
from connections.models import ByokConnection, DataKey, ScopedRevocation, ScopeKind, ScopeSource
from connections.scope_lifecycle import OPEN_STATES
from connections.services._common import SYSTEM_IDENTITY, _lock
from core.errors import NotAllowed, NotFound
from orgs.models import AppInstance, Site


class InvalidScope(NotAllowed):
    """The scope asked for cannot be revoked; the message is written for the customer."""


@dataclass(frozen=True)
class Scope:
    """What to revoke: exactly one of a site, an app instance, or a period (two times)."""

    kind: str
    site_id: int | None = None
    app_instance_id: int | None = None
    period_from: datetime | None = None
    period_to: datetime | None = None

    @classmethod
    def site(cls, site_id: int) -> Scope:
        return cls(ScopeKind.SITE, site_id=site_id)

    @classmethod
    def app(cls, app_instance_id: int) -> Scope:
        return cls(ScopeKind.APP, app_instance_id=app_instance_id)

    @classmethod
    def period(cls, start: datetime, end: datetime) -> Scope:
        return cls(ScopeKind.PERIOD, period_from=start, period_to=end)


def data_key_intervals(
    org_id: int, *, now: datetime | None = None
) -> list[tuple[int, datetime, datetime]]:
    """``(data key id, used from, used until)`` of every live data key of the org's BYOK apps."""
    now = now or timezone.now()
    rows = (
        DataKey.objects.filter(
            app_instance__site__organization_id=org_id,
            app_instance__encryption=AppInstance.Encryption.BYOK,
            destroyed_at=None,
        )
        .order_by("app_instance_id", "created_at", "pk")
        .values_list("pk", "app_instance_id", "created_at")
    )
    intervals: list[tuple[int, datetime, datetime]] = []
    rows = list(rows)
    for i, (pk, app_id, created) in enumerate(rows):
        successor = rows[i + 1] if i + 1 < len(rows) and rows[i + 1][1] == app_id else None
        intervals.append((pk, created, successor[2] if successor else now))
    return intervals


def keys_for_period(
    org_id: int, start: datetime, end: datetime, *, now: datetime | None = None
) -> tuple[list[int], datetime | None, datetime | None]:
    """The data keys a period revokes, and the exact span they cover (None when none)."""
    hit = [
        (pk, used_from, used_until)
        for pk, used_from, used_until in data_key_intervals(org_id, now=now)
        if used_from <= end and used_until >= start
    ]
    if not hit:
        return [], None, None
    return [h[0] for h in hit], min(h[1] for h in hit), max(h[2] for h in hit)


def _resolve(org, scope: Scope) -> dict:
    """The model fields of the scope, checked against the org (another org's object: 404)."""
    if scope.kind == ScopeKind.SITE:
        site = Site.objects.filter(pk=scope.site_id, organization=org).first()
        if site is None:
            raise NotFound("No such site in this organization.")
        if not site.app_instances.filter(encryption=AppInstance.Encryption.BYOK).exists():
            raise InvalidScope(f"Site {site.name} has no app using your keys.")
        return {"site": site}
    if scope.kind == ScopeKind.APP:
        app = (
            AppInstance.objects.select_related("site")
            .filter(pk=scope.app_instance_id, site__organization=org)
            .first()
        )
        if app is None:
            raise NotFound("No such app instance in this organization.")
        if app.encryption != AppInstance.Encryption.BYOK:
            raise InvalidScope(f"{app} uses vendor-managed keys, not yours.")
        return {"app_instance": app}
    if scope.kind == ScopeKind.PERIOD:
        start, end = scope.period_from, scope.period_to
        if start is None or end is None:
            raise InvalidScope("Give both the start and the end of the period.")
        if start >= end:
            raise InvalidScope("The period must start before it ends.")
        if start > timezone.now():
            raise InvalidScope("The period starts in the future: no data was written then.")
        return {"period_from": start, "period_to": min(end, timezone.now())}
    raise InvalidScope(f"Unknown scope {scope.kind!r}.")


def revoke_scope(*, org, actor, scope: Scope, reason: str, source_ip: str = "") -> ScopedRevocation:
    """An org admin revokes one scope (the view has checked the step-up)."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidScope("Give a reason.")
    return _revoke(
        org=org,
        scope=scope,
        reason=reason,
        actor=actor,
        source=ScopeSource.PORTAL,
        source_ip=source_ip,
    )


def revoke_scope_after_customer_denial(
    *, connection_id: int, scope: Scope, detail: str
) -> ScopedRevocation | None:
    """The health monitor saw AWS deny this scope's encryption context (a ``Deny`` in the
    customer's key policy): suspend exactly that scope. None if it is already revoked."""
    connection = ByokConnection.objects.select_related("organization").get(pk=connection_id)
    try:
        return _revoke(
            org=connection.organization,
            scope=scope,
            reason=f"Customer-side revocation: {detail}"[:500],
            actor=None,
            source=ScopeSource.CUSTOMER_AWS,
        )
    except TransitionNotAllowed:
        return None


def _revoke(*, org, scope, reason, actor, source, source_ip="") -> ScopedRevocation:
    try:
        with transaction.atomic():
            return _revoke_locked(
                org=org, scope=scope, reason=reason, actor=actor, source=source, source_ip=source_ip
            )
    except IntegrityError as exc:  # an open revocation of the same app or site committed first
        raise TransitionNotAllowed("This scope is already revoked.") from exc


def _revoke_locked(*, org, scope, reason, actor, source, source_ip) -> ScopedRevocation:
    fields = _resolve(org, scope)
    connection = _lock(org.pk)  # one scope change of an org at a time, and none during a kill
    if connection.state not in USABLE_STATES:
        raise TransitionNotAllowed(
            f"Key access of the whole organization is {connection.get_state_display().lower()};"
            " there is nothing more to revoke."
        )
    open_ = ScopedRevocation.objects.filter(organization=org, state__in=OPEN_STATES)
    if "site" in fields and open_.filter(kind=ScopeKind.SITE, site=fields["site"]).exists():
        raise TransitionNotAllowed(f"Site {fields['site'].name} is already revoked.")
    if "app_instance" in fields:
        app = fields["app_instance"]
        if open_.filter(kind=ScopeKind.APP, app_instance=app).exists():
            raise TransitionNotAllowed(
                f"{app.get_app_display()} on {app.site.name} is already revoked."
            )
    now = timezone.now()
    revocation = ScopedRevocation(
        organization=org,
        kind=scope.kind,
        source=source,
        reason=reason[:500],
        revoked_by=actor,
        revoked_at=now,
        restore_deadline=now + restore_window_length(),
        state_changed_at=now,
        state_reason=reason[:500],
        notices_sent={NOTICE_REVOKED: now.isoformat()},
        **fields,
    )
    dek_ids: list[int] = []
    if scope.kind == ScopeKind.PERIOD:
        dek_ids, revocation.covered_from, revocation.covered_to = keys_for_period(
            org.pk, revocation.period_from, revocation.period_to, now=now
        )
        if not dek_ids:
            raise InvalidScope(
                "No data of your apps was written in this period: nothing to revoke."
            )
    revocation.save()
    if dek_ids:
        revocation.data_keys.set(dek_ids)
        # New records must not be sealed under a revoked key: each app's next write makes a
        # fresh one (every process follows the database's current key within the guard's TTL).
        DataKey.objects.filter(pk__in=dek_ids, is_current=True).update(is_current=False)
    signals.scope_access_revoked.send(
        sender=ScopedRevocation, connection=connection, revocation=revocation
    )
    record_event(
        org=org,
        **({"actor": actor} if actor is not None else {"user_identity": SYSTEM_IDENTITY}),
        event_name="RevokeScopedKeyAccess",
        source_ip=source_ip,
        request_parameters={"scope": revocation.as_parameters(), "reason": reason[:300]},
        response_elements={
            "scopedRevocationId": revocation.pk,
            "state": revocation.state,
            "source": revocation.source,
            "dataKeys": len(dek_ids),
            "restoreDeadline": revocation.restore_deadline.isoformat(),
        },
        recipient_account_id=connection.aws_account_id,
    )
    transaction.on_commit(
        lambda: notifications.scope_notice(
            connection=connection, revocation=revocation, notice=NOTICE_REVOKED, detail=reason
        )
    )
    return revocation
