"""The per-process cache of unwrapped data keys, and the access guard that empties it.

**The cache.** Unwrapping a data key (DEK) costs a KMS ``Decrypt`` (plus a ``DescribeKey``);
encrypting a record costs a few microseconds. :class:`DekCache` keeps unwrapped DEKs — as
:class:`dataplane.envelope.DataKeyCipher` objects, never raw bytes — so KMS is asked rarely. It is
bounded three ways, read from settings (declared in ``byokportal/settings.py``):

* ``DEK_CACHE_MAX_AGE_S`` (300): an entry is dropped this long after it was unwrapped; the
  next use unwraps again, which re-checks the key with KMS.
* ``DEK_CACHE_MAX_USES`` (100 000): an entry is dropped after this many seals/opens.
* ``DEK_CACHE_MAX_ENTRIES`` (1000): least recently used entries are evicted beyond this.

It is thread-safe: one lock around the bookkeeping, and :func:`lease` — the hot path that
the data plane takes for every record — reads without it (each of its steps is atomic under
the GIL; under contention a use may go uncounted, so max uses is a soft bound).

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

**The writing key follows the database.** The same query also reads the app's current data
key id. When it differs from the key this process writes with (another process rotated the
DEK, or a re-encryption switched to new KMS keys), the process stops writing with its cached
key (``DekCache.sync_current``): within ``DEK_GUARD_TTL_S`` every process writes new records
under the current DEK, without any broadcast.
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
from dataplane.envelope import DataKeyCipher
from orgs.models import AppInstance

_BYOK = str(AppInstance.Encryption.BYOK)


class CachedKey:
    """A cache entry: the cipher, whose key it is (checked by the caller), age and uses.

    Callers read ``cipher``, ``org_id`` and ``app_instance_id``; only the cache writes.
    """

    __slots__ = ("cipher", "org_id", "app_instance_id", "expires_at", "uses")

    def __init__(self, cipher: DataKeyCipher, org_id: int, app_instance_id: int, expires_at):
        self.cipher = cipher
        self.org_id = org_id
        self.app_instance_id = app_instance_id
        self.expires_at = expires_at
        self.uses = 0


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
    ) -> None:
        """Cache an unwrapped key; ``current`` marks it as the app's key for new records;
        ``uses`` counts uses the caller makes without :meth:`get` (the one that unwrapped)."""
        with self._lock:
            entry = CachedKey(cipher, org_id, app_instance_id, self.clock() + self.max_age_s)
            entry.uses = uses
            self._entries[cipher.dek_id] = entry
            self._entries.move_to_end(cipher.dek_id)
            if current:
                self._current[app_instance_id] = cipher.dek_id
            self._evict_overflow()

    def _drop(self, dek_id: int) -> None:
        entry = self._entries.pop(dek_id, None)
        if entry is not None and self._current.get(entry.app_instance_id) == dek_id:
            del self._current[entry.app_instance_id]

    def _evict_overflow(self) -> None:
        entries = self._entries
        while len(entries) > max(self.max_entries, 0):
            # popitem is one atomic step, safe beside lease()'s unlocked move_to_end.
            dek_id, entry = entries.popitem(last=False)
            if self._current.get(entry.app_instance_id) == dek_id:
                del self._current[entry.app_instance_id]

    def mark_current(self, app_instance_id: int, dek_id: int) -> None:
        """Make an already cached key the app's writing key (its age and uses carry on)."""
        with self._lock:
            if dek_id in self._entries:
                self._current[app_instance_id] = dek_id

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
                    del self._current[app_instance_id]

    def forget_current(self, app_instance_id: int) -> None:
        """Stop treating any cached key as the app's writing key (after a rotation)."""
        with self._lock:
            self._current.pop(app_instance_id, None)

    def purge_org(self, org_id: int) -> int:
        """Drop every key of one organization; returns how many were dropped."""
        with self._lock:
            doomed = [k for k, e in self._entries.items() if e.org_id == org_id]
            for dek_id in doomed:
                self._drop(dek_id)
            return len(doomed)

    def purge_all(self) -> None:
        with self._lock:
            self._entries.clear()
            self._current.clear()


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
    is called with the org id whenever the answer is "not usable" (it purges the cache).
    """

    def __init__(
        self,
        *,
        lookup: Callable[[int], AppAccess | None],
        on_refused: Callable[[int], object],
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_checked: Callable[[AppAccess], object] | None = None,
    ):
        self._lookup = lookup
        self._on_refused = on_refused
        self._on_checked = on_checked
        self._fixed_ttl = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[float, AppAccess]] = {}  # id → (fresh until, answer)
        self.configure()

    def configure(self) -> None:
        self.ttl_s = float(
            self._fixed_ttl if self._fixed_ttl is not None else settings.DEK_GUARD_TTL_S
        )

    def check(self, app_instance_id: int, *, force: bool = False) -> AppAccess | None:
        """The app's access, from memo if younger than the TTL, else from the database.

        Returns ``None`` when the app instance does not exist. A "not usable" answer purges
        the org's keys in this process before it is returned.
        """
        now = self.clock()
        if not force:
            seen = self._seen.get(app_instance_id)
            if seen is not None and now < seen[0]:
                return seen[1]
        access = self._lookup(app_instance_id)
        if access is None:
            with self._lock:
                self._seen.pop(app_instance_id, None)
            return None
        if not access.usable:
            self._on_refused(access.org_id)
        elif self._on_checked is not None:
            self._on_checked(access)
        with self._lock:
            self._seen[app_instance_id] = (now + self.ttl_s, access)  # (fresh until, answer)
        return access

    def forget_org(self, org_id: int) -> None:
        with self._lock:
            for app_id in [a for a, (_, acc) in self._seen.items() if acc.org_id == org_id]:
                del self._seen[app_id]

    def forget_all(self) -> None:
        with self._lock:
            self._seen.clear()


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
        )
        .first()
    )
    if row is None:
        return None
    (status, status_reason, encryption, app, site, org_id, conn_id, state, state_reason, dek_id) = (
        row
    )
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
    )


CACHE = DekCache()
GUARD = AccessGuard(
    lookup=lookup_access,
    on_refused=CACHE.purge_org,
    on_checked=lambda access: CACHE.sync_current(access.app_instance_id, access.current_dek_id),
)
_guard_memo = GUARD._seen.get  # the memo dict is only ever cleared, never replaced


def lease(app_instance_id: int, dek_id: int | None = None):
    """The hot path: ``(access, cipher)`` if this process may use the key right now with no
    database or KMS call, else ``None`` (the caller takes the slow path, which re-checks,
    loads and explains).

    "May" means: the guard's memo of the app is younger than its TTL and says usable BYOK;
    and the key — ``dek_id``, or the app's current key when ``None`` — is cached, the app's
    own, and within its age and use limits (this counts one use).
    """
    now = GUARD.clock()  # the process-wide guard and cache share one clock
    seen = _guard_memo(app_instance_id)
    if seen is None or now >= seen[0] or not seen[1].ok:
        return None
    cache = CACHE
    if dek_id is None:
        dek_id = cache._current.get(app_instance_id)
    entry = cache._entries.get(dek_id)
    if (
        entry is None
        or entry.app_instance_id != app_instance_id
        or entry.uses >= cache.max_uses
        or now >= entry.expires_at
    ):
        return None
    # No lock on this path (it costs as much as the rest): each step is one atomic operation
    # under the GIL, and a use lost to a concurrent increment only stretches a soft limit.
    entry.uses += 1
    try:
        cache._entries.move_to_end(dek_id)
    except KeyError:  # evicted or purged meanwhile: this one use still stands
        pass
    return seen[1], entry.cipher


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
