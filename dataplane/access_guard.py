"""The access guard: "may this app instance use its keys now?", per process, at most
``DEK_GUARD_TTL_S`` old (see ``dataplane.dek_cache`` for how the cache and its leases use it).

One indexed query answers it (:func:`lookup_access`): the app instance, its site and org, the
org's connection state, the app's current data key, and the scoped revocations
(``connections.ScopedRevocation``) that reach it: whether the app or its site is revoked, and
— only when a period revocation covers one of its data keys, a second small query — the ids of
the app's revoked data keys. A refused org purges the org's cached keys in this process; a
refused app (the connection usable: the app or its site revoked, or the app suspended) purges
only that app's keys, so the org's other apps keep their warm cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Exists, FilteredRelation, OuterRef, Q, Subquery

from connections.lifecycle import USABLE_STATES
from connections.models import ConnectionState, DataKey, ScopedRevocation, ScopeKind, ScopeState
from connections.scope_lifecycle import BLOCKING_STATES
from core import metrics
from orgs.models import AppInstance

_BYOK = str(AppInstance.Encryption.BYOK)
_REVOKED = str(ConnectionState.REVOKED)
_BLOCKING = sorted(str(s) for s in BLOCKING_STATES)


@dataclass(frozen=True, slots=True)
class AppAccess:
    """What the guard learned about one app instance: who it belongs to, and whether usable."""

    app_instance_id: int
    org_id: int
    site_name: str
    app: str
    encryption: str
    connection_id: int | None
    connection_state: str | None
    usable: bool
    reason: str  # customer-readable; empty when usable
    #: The app's current data key in the database (None: none yet, or being replaced).
    current_dek_id: int | None = None
    #: When the connection last changed state (Unix time), for the revocation's latency.
    state_changed_at: float | None = None
    #: The state of a scoped revocation of the app or its site that refuses it (None: none).
    scope_state: str | None = None
    #: The app's data keys revoked by a period revocation: records they sealed are refused.
    revoked_dek_ids: frozenset[int] = frozenset()
    #: usable and BYOK: the one flag the hot path tests.
    ok: bool = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "ok", self.usable and self.encryption == _BYOK)

    @property
    def encryption_context(self) -> dict[str, str]:
        return {"org": str(self.org_id), "site": self.site_name, "app": self.app}


class AccessGuard:
    """Per-process memo of "may this app instance use its keys?", at most ``ttl_s`` old.

    ``lookup(app_instance_id) -> AppAccess | None`` does the database query; ``on_refused``
    is called with the org id whenever the answer is "not usable" (it purges the cache);
    ``on_forget(org_id=…)`` / ``on_forget(app_instance_id=…)`` / ``on_forget()`` whenever
    answers are dropped before their time (it ends the cache's leases built on them).
    ``on_app_refused`` is called with the app instance id instead of ``on_refused`` when only
    the app is refused (its org's connection is usable): it purges that app's keys only.
    """

    def __init__(
        self,
        *,
        lookup: Callable[[int], AppAccess | None],
        on_refused: Callable[[int], object],
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_checked: Callable[[AppAccess], object] | None = None,
        on_forget: Callable[..., object] | None = None,
        on_app_refused: Callable[[int], object] | None = None,
    ):
        self._lookup = lookup
        self._on_app_refused = on_app_refused
        self._on_refused = on_refused
        self._on_checked = on_checked
        self._on_forget = on_forget
        self._fixed_ttl = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[float, AppAccess]] = {}  # id → (fresh until, answer)
        self._revocations_seen: dict[int, float] = {}  # org id → state change time measured
        self.configure()

    def configure(self) -> None:
        self.ttl_s = float(
            self._fixed_ttl if self._fixed_ttl is not None else settings.DEK_GUARD_TTL_S
        )
        if self._on_forget is not None:  # answers (and leases) may be younger than a new TTL
            self._on_forget()

    def check(self, app_instance_id: int, *, force: bool = False) -> AppAccess | None:
        """The app's access, from memo if younger than the TTL, else from the database.

        Returns ``None`` when the app instance does not exist. A "not usable" answer purges
        the org's keys in this process before it is returned.
        """
        answer = self.check_until(app_instance_id, force=force)
        return None if answer is None else answer[1]

    def check_until(
        self, app_instance_id: int, *, force: bool = False
    ) -> tuple[float, AppAccess] | None:
        """Like :meth:`check`, with the clock reading until which the answer is fresh."""
        now = self.clock()
        before = self._seen.get(app_instance_id)
        if not force and before is not None and now < before[0]:
            return before
        access = self._lookup(app_instance_id)
        if access is None:
            with self._lock:
                self._seen.pop(app_instance_id, None)
            if self._on_forget is not None:
                self._on_forget(app_instance_id=app_instance_id)
            return None
        if not access.usable:
            if before is not None and before[1].usable and access.connection_state == _REVOKED:
                self._measure_propagation(access, now - before[0])
            if access.connection_state not in USABLE_STATES:
                # The org's keys are out: its other apps' "usable" answers are stale too.
                with self._lock:
                    for other in [
                        a for a, (_, acc) in self._seen.items() if acc.org_id == access.org_id
                    ]:
                        del self._seen[other]
                self._on_refused(access.org_id)
            elif self._on_app_refused is not None:
                self._on_app_refused(app_instance_id)  # only this app: the others keep working
            else:
                self._on_refused(access.org_id)
        elif self._on_checked is not None:
            self._on_checked(access)
        seen = (now + self.ttl_s, access)  # (fresh until, answer)
        with self._lock:
            self._seen[app_instance_id] = seen
        return seen

    def _measure_propagation(self, access: AppAccess, stale_for: float) -> None:
        """This process held a "usable" answer and now sees the revocation: observe how long
        after the state change that is (once per revocation and process). Not when the answer
        had gone stale more than a TTL before the revocation: the process was idle then, and
        the wait would measure its idleness, not the kill switch."""
        changed = access.state_changed_at
        if changed is None or self._revocations_seen.get(access.org_id) == changed:
            return
        delay = max(time.time() - changed, 0.0)
        if stale_for > delay + self.ttl_s:
            return
        self._revocations_seen[access.org_id] = changed
        metrics.REVOCATION_PROPAGATION_SECONDS.observe(delay)

    def forget_org(self, org_id: int) -> None:
        with self._lock:
            for app_id in [a for a, (_, acc) in self._seen.items() if acc.org_id == org_id]:
                del self._seen[app_id]
        if self._on_forget is not None:
            self._on_forget(org_id=org_id)

    def forget_app(self, app_instance_id: int) -> None:
        with self._lock:
            self._seen.pop(app_instance_id, None)
        if self._on_forget is not None:
            self._on_forget(app_instance_id=app_instance_id)

    def forget_all(self) -> None:
        with self._lock:
            self._seen.clear()
        if self._on_forget is not None:
            self._on_forget()


# --- The query -----------------------------------------------------------------------------


def _refusal_reason(
    *,
    state: str | None,
    state_reason: str,
    status: str,
    status_reason: str,
    scope_state: str | None = None,
    scope_kind: str | None = None,
):
    if state is None:
        return "This app has no BYOK key connection, so its data cannot be used."
    if state not in USABLE_STATES:
        because = f" ({state_reason.rstrip('.')})" if state_reason else ""
        return {
            ConnectionState.PENDING: "BYOK setup of this organization is not finished yet, "
            "so app data cannot be encrypted or read.",
            ConnectionState.REVOKED: f"Access to your encryption keys was revoked{because}. "
            "App data stays unreadable until access is restored.",
            ConnectionState.RESTORING: "Access to your encryption keys is being restored; "
            "app data becomes readable again once every check passes.",
            ConnectionState.EXPIRED: "Access to your encryption keys was revoked and not "
            f"restored within {settings.BYOK_RESTORE_WINDOW_DAYS} days; this app's data can no "
            "longer be decrypted.",
        }.get(state, f"Your key connection is {state}; app data cannot be used.")
    if scope_state is not None:
        what = "this app's site" if scope_kind == ScopeKind.SITE else "this app"
        return {
            ScopeState.REVOKED: f"Key access of {what} was revoked. Its data stays unreadable "
            "until access is restored; the organization's other apps keep working.",
            ScopeState.RESTORING: f"Key access of {what} is being restored; its data becomes "
            "readable again once every check passes.",
        }.get(
            scope_state,
            f"Key access of {what} was revoked and not restored within "
            f"{settings.BYOK_RESTORE_WINDOW_DAYS} days; its data can no longer be decrypted.",
        )
    if status == AppInstance.Status.SUSPENDED:
        because = f" ({status_reason.rstrip('.')})" if status_reason else ""
        return f"This app is suspended{because}; its data cannot be used until it resumes."
    return ""


def _blocking_scopes():
    """Open scoped revocations of the outer app instance or of its site (indexed on both)."""
    return ScopedRevocation.objects.filter(state__in=_BLOCKING).filter(
        Q(kind=ScopeKind.APP, app_instance_id=OuterRef("pk"))
        | Q(kind=ScopeKind.SITE, site_id=OuterRef("site_id"))
    )


_Through = ScopedRevocation.data_keys.through


def lookup_access(app_instance_id: int) -> AppAccess | None:
    """One indexed query: the app instance, its site and org, the org's connection, the app's
    current data key (a LEFT JOIN on the partial unique index of current keys), and whether a
    scoped revocation reaches the app; a second query only if a period revokes some of its
    data keys (their ids)."""
    row = (
        AppInstance.objects.filter(pk=app_instance_id)
        .annotate(
            current_dek=FilteredRelation("data_keys", condition=Q(data_keys__is_current=True)),
            scope_state=Subquery(_blocking_scopes().values("state")[:1]),
            scope_kind=Subquery(_blocking_scopes().values("kind")[:1]),
            period_revoked=Exists(
                _Through.objects.filter(
                    datakey__app_instance_id=OuterRef("pk"),
                    scopedrevocation__state__in=_BLOCKING,
                )
            ),
        )
        .values_list(
            "status",
            "status_reason",
            "encryption",
            "app",
            "site__name",
            "site__organization_id",
            "site__organization__byok_connection__id",
            "site__organization__byok_connection__state",
            "site__organization__byok_connection__state_reason",
            "current_dek__id",
            "site__organization__byok_connection__state_changed_at",
            "scope_state",
            "scope_kind",
            "period_revoked",
        )
        .first()
    )
    if row is None:
        return None
    (status, status_reason, encryption, app, site, org_id, conn_id, state, state_reason, dek_id) = (
        row[:10]
    )
    changed_at, scope_state, scope_kind, period_revoked = row[10:14]
    reason = _refusal_reason(
        state=state,
        state_reason=state_reason or "",
        status=status,
        status_reason=status_reason,
        scope_state=scope_state,
        scope_kind=scope_kind,
    )
    revoked_deks: frozenset[int] = frozenset()
    if period_revoked:
        revoked_deks = frozenset(
            DataKey.objects.filter(
                app_instance_id=app_instance_id, scoped_revocations__state__in=_BLOCKING
            ).values_list("pk", flat=True)
        )
    return AppAccess(
        app_instance_id=app_instance_id,
        org_id=org_id,
        site_name=site,
        app=app,
        encryption=encryption,
        connection_id=conn_id,
        connection_state=state,
        usable=not reason,
        reason=reason,
        current_dek_id=dek_id,
        state_changed_at=changed_at.timestamp() if changed_at is not None else None,
        scope_state=scope_state,
        revoked_dek_ids=revoked_deks,
    )
