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
and there is no broadcast between them. Instead, the data plane asks the
:class:`~dataplane.access_guard.AccessGuard` (``dataplane/access_guard.py``)
before *every* use of a DEK. The guard remembers, per app instance and per process, the
answer of one cheap indexed query (the app instance's status and its organization's
``ByokConnection.state``, joined by primary keys) for at most ``DEK_GUARD_TTL_S`` (0.5 s).
When the answer is "not usable" (connection state outside ``connections.lifecycle.USABLE_STATES``:
the guard purges every cached DEK of that organization in this process; the app instance
suspended, or it or its site revoked by a scoped revocation: only that app's DEKs), the caller
refuses with ``AppSuspended``. The same answer lists the app's data keys a revoked period
covers: they are dropped from the cache and never leased, and a read of a record they sealed
is refused. So once a revocation commits,
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

from django.conf import settings
from django.core.signals import setting_changed

from core import metrics
from dataplane.access_guard import AccessGuard, AppAccess, lookup_access
from dataplane.envelope import DataKeyCipher

__all__ = ["CACHE", "GUARD", "AccessGuard", "AppAccess", "CachedKey", "DekCache", "lookup_access"]


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

    def purge_app(self, app_instance_id: int) -> int:
        """Drop every key of one app instance (its app or site was revoked)."""
        with self._lock:
            self._lease_epoch += 1
            doomed = [k for k, e in self._entries.items() if e.app_instance_id == app_instance_id]
            for dek_id in doomed:
                self._drop(dek_id)
            return len(doomed)

    def discard_many(self, dek_ids) -> None:
        """Drop these keys if cached (a period revocation covers them)."""
        if not any(dek_id in self._entries for dek_id in dek_ids):
            return
        with self._lock:
            self._lease_epoch += 1
            for dek_id in dek_ids:
                self._drop(dek_id)

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


CACHE = DekCache()


def _follow_database(access: AppAccess) -> None:
    """A usable answer: write with the database's current key; drop period-revoked keys."""
    CACHE.sync_current(access.app_instance_id, access.current_dek_id)
    if access.revoked_dek_ids:
        CACHE.discard_many(access.revoked_dek_ids)


GUARD = AccessGuard(
    lookup=lookup_access,
    on_refused=CACHE.purge_org,
    on_app_refused=CACHE.purge_app,
    on_checked=_follow_database,
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


def purge_app(app_instance_id: int) -> int:
    """Forget one app instance's keys and guard answer in this process (a scope revoked)."""
    GUARD.forget_app(app_instance_id)
    return CACHE.purge_app(app_instance_id)


def purge_all() -> None:
    """Forget every unwrapped key and guard answer in this process (tests, shutdown)."""
    GUARD.forget_all()
    CACHE.purge_all()


def _reconfigure(*, setting: str, **_kwargs) -> None:
    if setting.startswith("DEK_"):
        CACHE.configure()
        GUARD.configure()


setting_changed.connect(_reconfigure, dispatch_uid="dataplane.dek_cache.reconfigure")
