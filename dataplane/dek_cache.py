"""The per-process cache of unwrapped data keys, and the access guard that empties it.

**The cache.** Unwrapping a data key (DEK) costs a KMS ``Decrypt`` (plus a ``DescribeKey``);
encrypting a record costs a few microseconds. :class:`DekCache` keeps unwrapped DEKs — as
:class:`dataplane.envelope.DataKeyCipher` objects, never raw bytes — so KMS is asked rarely. It is
bounded three ways, read from settings (declared in ``byokportal/settings.py``):

* ``DEK_CACHE_MAX_AGE_S`` (300): an entry is dropped this long after it was unwrapped; the
  next use unwraps again, which re-checks the key with KMS.
* ``DEK_CACHE_MAX_USES`` (100 000): an entry is dropped after this many seals/opens.
* ``DEK_CACHE_MAX_ENTRIES`` (1000): least recently used entries are evicted beyond this.

It is thread-safe: one lock around the bookkeeping, and the hot path that the data plane
takes for every record (through :data:`writer_of` / :data:`entry_for_header`, below) reads
without it (each of its steps is atomic under the GIL; under contention a use may go
uncounted, so max uses is a soft bound). Recency for the LRU bound is refreshed by every
locked :meth:`DekCache.get` and every lease renewal (at least every ``DEK_GUARD_TTL_S`` while
a key is in use), not by each hot-path use.

**Revocation reaches every process.** Each web worker and Celery worker has its own cache,
and there is no broadcast between them. Instead, the data plane asks :class:`AccessGuard`
before *every* use of a DEK. The guard remembers, per app instance and per process, the
answer of one cheap indexed query (the app instance's status and its organization's
``ByokConnection.state``, joined by primary keys) for at most ``DEK_GUARD_TTL_S`` (0.5 s).
When the answer is "not usable" (connection state outside ``connections.lifecycle.USABLE_STATES``,
or the app instance suspended), the guard purges every cached DEK of that organization in
this process and the caller refuses with ``AppSuspended``. So once a revocation commits,
no process uses a key of that org more than ``DEK_GUARD_TTL_S`` later, whatever the cache's
age limit; each process drops the org's keys from memory at its first attempt to use one
(a process that stays idle keeps them, unusable, until then). The revoking process also
calls :func:`purge_org` directly (best after commit, with ``transaction.on_commit``), and a
KMS refusal seen by the data plane purges at once.

The cost is at most one small query per app instance per process every 0.5 s, and none for
an app instance that is idle. The clock is injectable (``clock=``) for tests.

**Leases: the guard's answer, checked once per lease.** The hot path does not consult the
guard's memo on every use. When the slow path (records) has a fresh "usable" answer for an app
and a cached key of it, it *grants* the entry a lease (:meth:`DekCache.grant`) that ends when
that answer stops being fresh or the key reaches its max age, whichever is first. A use then
costs one dict lookup, one clock read and the use count. The lease never outlives the guard
answer it was granted on, so revocation reaches every process within ``DEK_GUARD_TTL_S``
exactly as before; and whatever makes the guard re-read the state at once (``purge_org``, the
guard forgetting an org or app, a refusal) also ends the leases concerned at once. A grant
racing with such an event is not made (an epoch counter, checked under the lock).

**The writing key follows the database.** The same query also reads the app's current data
key id. When it differs from the key this process writes with (another process rotated the
DEK, or a re-encryption switched to new KMS keys), the process stops writing with its cached
key (``DekCache.sync_current``): within ``DEK_GUARD_TTL_S`` every process writes new records
under the current DEK, without any broadcast.

**Metrics** (``core.metrics``): a miss is counted when a key enters the cache; the hot path's
uses are exported as hits at each lease renewal (so the hot path itself stays as it was); the
guard observes the revocation's propagation delay when it refuses an org it was serving.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.signals import setting_changed
from django.db.models import FilteredRelation, Q

from connections.lifecycle import USABLE_STATES
from connections.models import ConnectionState
from core import metrics
from dataplane.envelope import DataKeyCipher
from orgs.models import AppInstance

_BYOK = str(AppInstance.Encryption.BYOK)
_REVOKED = str(ConnectionState.REVOKED)


class CachedKey:
    """A cache entry: the cipher, whose key it is (checked by the caller), age, uses, lease.

    Callers read ``cipher``, ``dek_id``, ``org_id``, ``app_instance_id`` and the record
    functions ``seal`` / ``open`` (bound to this org and app instance, see
    :meth:`DataKeyCipher.record_functions`); only the cache writes.
    """

    __slots__ = (
        "cipher",
        "dek_id",
        "org_id",
        "app_instance_id",
        "expires_at",
        "uses",
        "max_uses",
        "lease_until",
        "seal",
        "open",
        "counted",
    )

    def __init__(
        self,
        cipher: DataKeyCipher,
        org_id: int,
        app_instance_id: int,
        expires_at: float,
        max_uses: int = 0,
    ):
        self.cipher = cipher
        self.dek_id = cipher.dek_id
        self.org_id = org_id
        self.app_instance_id = app_instance_id
        self.expires_at = expires_at
        self.uses = 0
        self.max_uses = max_uses  # the cache's limit, kept here for the hot path
        self.lease_until = float("-inf")  # no lease until the slow path grants one
        self.counted = 0  # uses already exported as cache hits (``DekCache._export_hits``)
        self.seal, self.open = cipher.record_functions(
            org_id=org_id, app_instance_id=app_instance_id
        )


class DekCache:
    """Bounded, thread-safe map ``data key id → DataKeyCipher`` (+ the current DEK per app)."""

    def __init__(
        self,
        *,
        max_age_s: float | None = None,
        max_uses: int | None = None,
        max_entries: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._fixed = {"max_age_s": max_age_s, "max_uses": max_uses, "max_entries": max_entries}
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, CachedKey] = OrderedDict()
        self._current: dict[int, int] = {}  # app instance id → data key id
        # The hot path's lookups, mirroring the two above (same entries, kept under the lock):
        self._writers: dict[int, CachedKey] = {}  # app instance id → its current key's entry
        self._by_header: dict[bytes, CachedKey] = {}  # ciphertext header → entry
        self._lease_epoch = 0  # bumped whenever leases are ended; a grant checks it
        self.configure()

    def configure(self) -> None:
        """(Re)read the limits from settings, except those fixed at construction."""
        fixed = self._fixed
        self.max_age_s = float(
            fixed["max_age_s"] if fixed["max_age_s"] is not None else settings.DEK_CACHE_MAX_AGE_S
        )
        self.max_uses = int(
            fixed["max_uses"] if fixed["max_uses"] is not None else settings.DEK_CACHE_MAX_USES
        )
        self.max_entries = int(
            fixed["max_entries"]
            if fixed["max_entries"] is not None
            else settings.DEK_CACHE_MAX_ENTRIES
        )
        with self._lock:
            for entry in self._entries.values():
                entry.max_uses = self.max_uses
            self._evict_overflow()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, dek_id: int) -> bool:
        return dek_id in self._entries

    # -- reads --

    def get(self, dek_id: int) -> CachedKey | None:
        """The entry of ``dek_id`` (counting one use), or ``None`` if absent or expired."""
        with self._lock:
            entry = self._entries.get(dek_id)
            if entry is None:
                return None
            if entry.uses >= self.max_uses or self.clock() >= entry.expires_at:
                self._drop(dek_id)
                return None
            entry.uses += 1
            self._entries.move_to_end(dek_id)
            return entry

    def get_current(self, app_instance_id: int) -> CachedKey | None:
        """The entry of the app instance's current (writing) DEK, counting one use."""
        dek_id = self._current.get(app_instance_id)
        if dek_id is None:
            return None
        return self.get(dek_id)

    # -- writes --

    def put(
        self,
        cipher: DataKeyCipher,
        *,
        org_id: int,
        app_instance_id: int,
        current: bool = False,
        uses: int = 0,
    ) -> CachedKey:
        """Cache an unwrapped key; ``current`` marks it as the app's key for new records;
        ``uses`` counts uses the caller makes without :meth:`get` (the one that unwrapped).
        Returns the new entry (without a lease). Counted as a cache miss: the caller unwrapped
        or created the key with KMS."""
        metrics.DEK_CACHE_MISSES.inc()
        with self._lock:
            entry = CachedKey(
                cipher, org_id, app_instance_id, self.clock() + self.max_age_s, self.max_uses
            )
            entry.uses = entry.counted = uses  # the miss's own use is not a hit
            dek_id = cipher.dek_id
            old = self._entries.get(dek_id)  # a key cached again replaces its entry
            was_current = old is not None and self._current.get(old.app_instance_id) == dek_id
            self._forget(old)
            self._entries[dek_id] = entry
            self._entries.move_to_end(dek_id)
            self._by_header[cipher.header] = entry
            if current or (was_current and old.app_instance_id == app_instance_id):
                self._set_current(app_instance_id, entry)
            self._evict_overflow()
            return entry

    def _set_current(self, app_instance_id: int, entry: CachedKey) -> None:
        self._current[app_instance_id] = entry.dek_id
        self._writers[app_instance_id] = entry

    def _unset_current(self, app_instance_id: int) -> None:
        self._current.pop(app_instance_id, None)
        self._writers.pop(app_instance_id, None)

    def _forget(self, entry: CachedKey | None) -> None:
        """Take an entry out of the hot path's lookups (it is leaving the cache)."""
        if entry is None:
            return
        self._export_hits(entry)
        entry.lease_until = float("-inf")
        if self._by_header.get(entry.cipher.header) is entry:
            del self._by_header[entry.cipher.header]
        if self._current.get(entry.app_instance_id) == entry.dek_id:
            self._unset_current(entry.app_instance_id)

    def _drop(self, dek_id: int) -> None:
        self._forget(self._entries.pop(dek_id, None))

    def _evict_overflow(self) -> None:
        entries = self._entries
        while len(entries) > max(self.max_entries, 0):
            _dek_id, entry = entries.popitem(last=False)
            self._forget(entry)

    def mark_current(self, app_instance_id: int, dek_id: int) -> None:
        """Make an already cached key the app's writing key (its age and uses carry on)."""
        with self._lock:
            entry = self._entries.get(dek_id)
            if entry is not None:
                self._set_current(app_instance_id, entry)

    def discard(self, dek_id: int) -> None:
        with self._lock:
            self._drop(dek_id)

    def discard_current(self, app_instance_id: int) -> None:
        """Drop the app's current key from the cache (the next write unwraps it again)."""
        with self._lock:
            dek_id = self._current.get(app_instance_id)
            if dek_id is not None:
                self._drop(dek_id)

    def sync_current(self, app_instance_id: int, dek_id: int | None) -> None:
        """The database says the app's current DEK is ``dek_id``: stop writing with another."""
        cached = self._current.get(app_instance_id)
        if cached is not None and cached != dek_id:
            with self._lock:
                if self._current.get(app_instance_id) == cached:
                    self._unset_current(app_instance_id)

    def forget_current(self, app_instance_id: int) -> None:
        """Stop treating any cached key as the app's writing key (after a rotation)."""
        with self._lock:
            self._unset_current(app_instance_id)

    def purge_org(self, org_id: int) -> int:
        """Drop every key of one organization; returns how many were dropped."""
        with self._lock:
            self._lease_epoch += 1
            doomed = [k for k, e in self._entries.items() if e.org_id == org_id]
            for dek_id in doomed:
                self._drop(dek_id)
            return len(doomed)

    def purge_all(self) -> None:
        with self._lock:
            self._lease_epoch += 1
            for entry in self._entries.values():
                self._export_hits(entry)
                entry.lease_until = float("-inf")
            self._entries.clear()
            self._current.clear()
            self._writers.clear()
            self._by_header.clear()

    # -- cache hits, for /metrics --

    @staticmethod
    def _export_hits(entry: CachedKey) -> None:
        """Export the entry's uses since the last export as cache hits. The hot path only
        counts ``entry.uses`` (a Prometheus increment per use would cost as much as the use):
        the slow path exports them at each lease renewal and when the entry leaves."""
        uses = entry.uses
        if uses > entry.counted:
            metrics.DEK_CACHE_HITS.inc(uses - entry.counted)
            entry.counted = uses

    def export_hits(self) -> None:
        """Export every entry's uncounted hits now (a scrape of this process)."""
        with self._lock:
            for entry in self._entries.values():
                self._export_hits(entry)

    # -- leases (see the module docstring) --

    @property
    def lease_epoch(self) -> int:
        """Read before asking the guard; :meth:`grant` refuses if leases ended meanwhile."""
        return self._lease_epoch

    def grant(self, entry: CachedKey, *, until: float, epoch: int) -> bool:
        """Let the hot path use ``entry`` until ``until`` (the end of the guard answer that
        allowed it), capped at the key's max age. Not granted if ``end_leases`` or a purge
        ran since ``epoch`` was read, or the entry left the cache. Refreshes its recency."""
        with self._lock:
            if epoch != self._lease_epoch or self._entries.get(entry.dek_id) is not entry:
                return False
            entry.lease_until = min(until, entry.expires_at)
            self._entries.move_to_end(entry.dek_id)
            self._export_hits(entry)
            return True

    def end_leases(self, *, org_id: int | None = None, app_instance_id: int | None = None):
        """End the leases of one org, one app instance, or (neither given) all: their next
        use takes the slow path, which asks the guard again."""
        with self._lock:
            self._lease_epoch += 1
            for entry in self._entries.values():
                if (org_id is None or entry.org_id == org_id) and (
                    app_instance_id is None or entry.app_instance_id == app_instance_id
                ):
                    entry.lease_until = float("-inf")


# --- The access guard -----------------------------------------------------------------------


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
    ):
        self._lookup = lookup
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

    def forget_all(self) -> None:
        with self._lock:
            self._seen.clear()
        if self._on_forget is not None:
            self._on_forget()


# --- Process-wide instances -----------------------------------------------------------------


def _refusal_reason(*, state: str | None, state_reason: str, status: str, status_reason: str):
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
    if status == AppInstance.Status.SUSPENDED:
        because = f" ({status_reason.rstrip('.')})" if status_reason else ""
        return f"This app is suspended{because}; its data cannot be used until it resumes."
    return ""


def lookup_access(app_instance_id: int) -> AppAccess | None:
    """One indexed query: the app instance, its site and org, the org's connection, and the
    app's current data key (a LEFT JOIN on the partial unique index of current keys)."""
    row = (
        AppInstance.objects.filter(pk=app_instance_id)
        .annotate(
            current_dek=FilteredRelation("data_keys", condition=Q(data_keys__is_current=True))
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
        )
        .first()
    )
    if row is None:
        return None
    (status, status_reason, encryption, app, site, org_id, conn_id, state, state_reason, dek_id) = (
        row[:10]
    )
    changed_at = row[10]
    reason = _refusal_reason(
        state=state, state_reason=state_reason or "", status=status, status_reason=status_reason
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
    )


CACHE = DekCache()
GUARD = AccessGuard(
    lookup=lookup_access,
    on_refused=CACHE.purge_org,
    on_checked=lambda access: CACHE.sync_current(access.app_instance_id, access.current_dek_id),
    on_forget=CACHE.end_leases,
)

#: The hot path's lookups (the dicts are only ever cleared, never replaced). An entry found
#: here may be used without the lock only if ``GUARD.clock() < entry.lease_until`` and
#: ``entry.uses < entry.max_uses`` (then count the use: ``entry.uses += 1``); for a reader,
#: also ``entry.app_instance_id`` must be the caller's app. Otherwise take the slow path
#: (``dataplane.records``), which asks the guard and grants a new lease.
writer_of = CACHE._writers.get  # app instance id → entry of its current (writing) key
entry_for_header = CACHE._by_header.get  # the 9 header bytes of a ciphertext → entry


def purge_org(org_id: int) -> int:
    """Forget every unwrapped key of an organization in this process (and the guard's memo,
    so the next use re-reads the connection state). Returns how many keys were dropped."""
    GUARD.forget_org(org_id)
    return CACHE.purge_org(org_id)


def purge_all() -> None:
    """Forget every unwrapped key and guard answer in this process (tests, shutdown)."""
    GUARD.forget_all()
    CACHE.purge_all()


def _reconfigure(*, setting: str, **_kwargs) -> None:
    if setting.startswith("DEK_"):
        CACHE.configure()
        GUARD.configure()


setting_changed.connect(_reconfigure, dispatch_uid="dataplane.dek_cache.reconfigure")
