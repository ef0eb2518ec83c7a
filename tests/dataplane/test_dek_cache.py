"""dataplane.dek_cache: the bounded cache of unwrapped data keys and the per-process guard."""

import threading

import pytest

from dataplane import dek_cache
from dataplane.dek_cache import AccessGuard, AppAccess, DekCache
from dataplane.envelope import DataKeyCipher


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def cipher(dek_id: int) -> DataKeyCipher:
    return DataKeyCipher(dek_id=dek_id, dek=bytes([dek_id % 256]) * 32)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_cache(clock, **limits) -> DekCache:
    limits = {"max_age_s": 300, "max_uses": 1000, "max_entries": 100, **limits}
    return DekCache(clock=clock, **limits)


def test_cached_key_is_returned_with_its_owner(clock):
    cache = make_cache(clock)
    cache.put(cipher(1), org_id=10, app_instance_id=20)

    hit = cache.get(1)

    assert hit.cipher.dek_id == 1
    assert (hit.org_id, hit.app_instance_id) == (10, 20)
    assert cache.get(2) is None


def test_key_expires_at_max_age(clock):
    cache = make_cache(clock, max_age_s=300)
    cache.put(cipher(1), org_id=10, app_instance_id=20)

    clock.advance(299.9)
    assert cache.get(1) is not None
    clock.advance(0.1)
    assert cache.get(1) is None
    assert 1 not in cache


def test_key_expires_after_max_uses(clock):
    cache = make_cache(clock, max_uses=3)
    cache.put(cipher(1), org_id=10, app_instance_id=20)

    assert [cache.get(1) is not None for _ in range(4)] == [True, True, True, False]


def test_current_key_lookup_counts_uses_too(clock):
    cache = make_cache(clock, max_uses=2)
    cache.put(cipher(1), org_id=10, app_instance_id=20, current=True)

    assert cache.get_current(20).cipher.dek_id == 1
    assert cache.get(1) is not None
    assert cache.get_current(20) is None  # third use: expired, and no longer current
    assert cache.get_current(21) is None


def test_least_recently_used_key_is_evicted_beyond_max_entries(clock):
    cache = make_cache(clock, max_entries=3)
    for dek_id in (1, 2, 3):
        cache.put(cipher(dek_id), org_id=10, app_instance_id=20)
    cache.get(1)  # 2 is now the least recently used

    cache.put(cipher(4), org_id=10, app_instance_id=20)

    assert len(cache) == 3
    assert 2 not in cache
    assert all(k in cache for k in (1, 3, 4))


def test_evicting_the_current_key_forgets_it_as_current(clock):
    cache = make_cache(clock, max_entries=1)
    cache.put(cipher(1), org_id=10, app_instance_id=20, current=True)
    cache.put(cipher(2), org_id=10, app_instance_id=21)

    assert cache.get_current(20) is None


def test_purge_org_drops_only_that_orgs_keys(clock):
    cache = make_cache(clock)
    cache.put(cipher(1), org_id=10, app_instance_id=20, current=True)
    cache.put(cipher(2), org_id=10, app_instance_id=21)
    cache.put(cipher(3), org_id=11, app_instance_id=30, current=True)

    assert cache.purge_org(10) == 2

    assert 1 not in cache and 2 not in cache
    assert cache.get_current(20) is None
    assert cache.get_current(30).cipher.dek_id == 3


def test_purge_all_empties_the_cache(clock):
    cache = make_cache(clock)
    cache.put(cipher(1), org_id=10, app_instance_id=20, current=True)

    cache.purge_all()

    assert len(cache) == 0
    assert cache.get_current(20) is None


def test_limits_come_from_settings_declared_with_documented_defaults(settings):
    # The README documents these defaults; settings.py declares them (no hidden fallbacks).
    cache = DekCache()
    assert (cache.max_age_s, cache.max_uses, cache.max_entries) == (300.0, 100_000, 1000)

    settings.DEK_CACHE_MAX_AGE_S = 60
    settings.DEK_CACHE_MAX_USES = 500
    settings.DEK_CACHE_MAX_ENTRIES = 7
    cache = DekCache()
    assert (cache.max_age_s, cache.max_uses, cache.max_entries) == (60.0, 500, 7)


def test_process_cache_follows_settings_changes(settings):
    settings.DEK_CACHE_MAX_USES = 123
    settings.DEK_GUARD_TTL_S = 0.25

    assert dek_cache.CACHE.max_uses == 123
    assert dek_cache.GUARD.ttl_s == 0.25


def test_concurrent_use_counts_every_use_exactly(clock):
    cache = make_cache(clock, max_uses=10_000)
    cache.put(cipher(1), org_id=10, app_instance_id=20, current=True)
    hits = []

    def worker():
        hits.append(sum(cache.get_current(20) is not None for _ in range(1000)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(hits) == 8000
    assert cache._entries[1].uses == 8000


def test_concurrent_puts_never_exceed_max_entries(clock):
    cache = make_cache(clock, max_entries=50)

    def worker(base):
        for i in range(200):
            cache.put(cipher(base + i), org_id=base, app_instance_id=base)

    threads = [threading.Thread(target=worker, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(cache) == 50


# --- The access guard ----------------------------------------------------------------------


def access(*, usable=True, org_id=10, app_id=20) -> AppAccess:
    return AppAccess(
        app_instance_id=app_id,
        org_id=org_id,
        site_name="acme",
        app="jira",
        encryption="byok",
        connection_id=1,
        connection_state="active" if usable else "revoked",
        usable=usable,
        reason="" if usable else "Access to your encryption keys was revoked.",
    )


class Lookup:
    def __init__(self, answer):
        self.answer = answer
        self.calls = 0

    def __call__(self, app_instance_id):
        self.calls += 1
        return self.answer


def test_guard_asks_the_database_at_most_once_per_ttl(clock):
    lookup = Lookup(access())
    guard = AccessGuard(lookup=lookup, on_refused=lambda org_id: None, ttl_s=0.5, clock=clock)

    for _ in range(100):
        assert guard.check(20).usable
    clock.advance(0.49)
    guard.check(20)
    assert lookup.calls == 1

    clock.advance(0.01)
    guard.check(20)
    assert lookup.calls == 2


def test_guard_sees_revocation_within_ttl_and_purges_the_org(clock):
    lookup = Lookup(access())
    purged = []
    guard = AccessGuard(lookup=lookup, on_refused=purged.append, ttl_s=0.5, clock=clock)
    assert guard.check(20).usable

    lookup.answer = access(usable=False)  # another process revoked
    clock.advance(0.5)

    answer = guard.check(20)
    assert not answer.usable
    assert "revoked" in answer.reason
    assert purged == [10]


def test_a_revoked_org_seen_on_one_app_is_rechecked_on_its_other_apps_at_once(clock):
    """Seeing the org's revocation through one app drops the "usable" answers of its other
    apps: their next read asks again (and is refused) instead of unwrapping a key on a stale
    answer. Another org's answers stay."""
    answers = {20: access(app_id=20), 21: access(app_id=21), 30: access(org_id=11, app_id=30)}
    calls = []

    def lookup(app_id):
        calls.append(app_id)
        return answers[app_id]

    guard = AccessGuard(lookup=lookup, on_refused=lambda org_id: None, ttl_s=0.5, clock=clock)
    assert all(guard.check(app_id).usable for app_id in (20, 21, 30))
    answers[20] = access(app_id=20, usable=False)
    answers[21] = access(app_id=21, usable=False)
    clock.advance(0.3)
    assert not guard.check(20, force=True).usable
    calls.clear()
    assert not guard.check(21).usable  # asked again, though its answer was 0.3 s old
    assert guard.check(30).usable
    assert calls == [21]


def test_guard_force_rechecks_now(clock):
    lookup = Lookup(access())
    guard = AccessGuard(lookup=lookup, on_refused=lambda org_id: None, ttl_s=0.5, clock=clock)
    guard.check(20)

    guard.check(20, force=True)

    assert lookup.calls == 2


def test_guard_forget_org_makes_the_next_check_query(clock):
    lookup = Lookup(access())
    guard = AccessGuard(lookup=lookup, on_refused=lambda org_id: None, ttl_s=0.5, clock=clock)
    guard.check(20)

    guard.forget_org(10)
    guard.check(20)

    assert lookup.calls == 2


def test_guard_answers_none_for_a_missing_app(clock):
    guard = AccessGuard(lookup=Lookup(None), on_refused=lambda org_id: None, clock=clock)

    assert guard.check(99) is None


def test_purge_org_clears_the_process_cache_and_guard_memo(monkeypatch, clock):
    monkeypatch.setattr(dek_cache.GUARD, "clock", clock)
    dek_cache.CACHE.put(cipher(77), org_id=123456, app_instance_id=654321)
    dek_cache.GUARD._seen[654321] = (clock() + 1, access(org_id=123456, app_id=654321))

    assert dek_cache.purge_org(123456) == 1

    assert 77 not in dek_cache.CACHE
    assert 654321 not in dek_cache.GUARD._seen


# --- Leases: what the hot path may use without asking the guard --------------------------------


def test_granted_lease_ends_with_the_guard_answer_or_the_key_age(clock):
    cache = make_cache(clock, max_age_s=300)
    entry = cache.put(cipher(1), org_id=10, app_instance_id=20, current=True)

    assert cache.grant(entry, until=clock() + 0.5, epoch=cache.lease_epoch)
    assert entry.lease_until == clock() + 0.5
    cache.grant(entry, until=clock() + 1000, epoch=cache.lease_epoch)
    assert entry.lease_until == entry.expires_at == clock() + 300


def test_a_new_entry_has_no_lease_until_granted(clock):
    cache = make_cache(clock)

    entry = cache.put(cipher(1), org_id=10, app_instance_id=20, current=True)

    assert entry.lease_until < clock()
    assert cache._writers[20] is entry
    assert cache._by_header[cipher(1).header] is entry


def test_grant_is_refused_when_leases_ended_since_the_guard_was_asked(clock):
    cache = make_cache(clock)
    entry = cache.put(cipher(1), org_id=10, app_instance_id=20)
    epoch = cache.lease_epoch

    cache.end_leases(org_id=99)  # any org: a purge or forget raced the slow path

    assert not cache.grant(entry, until=clock() + 0.5, epoch=epoch)
    assert entry.lease_until < clock()


def test_grant_is_refused_for_an_entry_no_longer_cached(clock):
    cache = make_cache(clock)
    entry = cache.put(cipher(1), org_id=10, app_instance_id=20)
    cache.discard(1)

    assert not cache.grant(entry, until=clock() + 0.5, epoch=cache.lease_epoch)


def test_end_leases_ends_only_the_named_orgs_or_apps_leases(clock):
    cache = make_cache(clock)
    mine = cache.put(cipher(1), org_id=10, app_instance_id=20)
    other_app = cache.put(cipher(2), org_id=10, app_instance_id=21)
    other_org = cache.put(cipher(3), org_id=11, app_instance_id=30)
    for entry in (mine, other_app, other_org):
        cache.grant(entry, until=clock() + 0.5, epoch=cache.lease_epoch)

    cache.end_leases(app_instance_id=20)
    assert mine.lease_until < clock() < other_app.lease_until
    cache.end_leases(org_id=10)
    assert other_app.lease_until < clock() < other_org.lease_until
    cache.end_leases()
    assert other_org.lease_until < clock()


@pytest.mark.parametrize("how", ["discard", "discard_current", "purge_org", "purge_all", "evict"])
def test_a_key_leaving_the_cache_leaves_the_hot_path_lookups(clock, how):
    cache = make_cache(clock, max_entries=1)
    entry = cache.put(cipher(1), org_id=10, app_instance_id=20, current=True)
    cache.grant(entry, until=clock() + 0.5, epoch=cache.lease_epoch)

    {
        "discard": lambda: cache.discard(1),
        "discard_current": lambda: cache.discard_current(20),
        "purge_org": lambda: cache.purge_org(10),
        "purge_all": cache.purge_all,
        "evict": lambda: cache.put(cipher(2), org_id=11, app_instance_id=30),
    }[how]()

    assert 20 not in cache._writers
    assert cipher(1).header not in cache._by_header
    assert entry.lease_until < clock()


@pytest.mark.parametrize("how", ["sync_current", "forget_current"])
def test_a_key_no_longer_current_stops_being_the_writer(clock, how):
    cache = make_cache(clock)
    entry = cache.put(cipher(1), org_id=10, app_instance_id=20, current=True)

    if how == "sync_current":
        cache.sync_current(20, 2)  # the database names another current key
    else:
        cache.forget_current(20)

    assert 20 not in cache._writers
    assert cache._by_header[cipher(1).header] is entry  # still readable


def test_marking_a_cached_key_current_makes_it_the_writer(clock):
    cache = make_cache(clock)
    entry = cache.put(cipher(1), org_id=10, app_instance_id=20)

    cache.mark_current(20, 1)

    assert cache._writers[20] is entry


def test_configured_max_uses_reaches_cached_entries(clock, settings):
    cache = DekCache(clock=clock)
    entry = cache.put(cipher(1), org_id=10, app_instance_id=20)

    settings.DEK_CACHE_MAX_USES = 7
    cache.configure()

    assert entry.max_uses == cache.max_uses == 7


@pytest.mark.parametrize(
    ("forget", "ended_leases"),
    [
        ("org", [{"org_id": 10}]),
        ("all", [{}]),
        ("missing-app", [{"app_instance_id": 20}]),
    ],
)
def test_whatever_makes_the_guard_ask_again_ends_the_leases_built_on_it(
    clock, forget, ended_leases
):
    ended = []
    lookup = Lookup(access())
    guard = AccessGuard(
        lookup=lookup,
        on_refused=lambda org_id: None,
        ttl_s=0.5,
        clock=clock,
        on_forget=lambda **which: ended.append(which),
    )
    guard.check(20)
    ended.clear()

    if forget == "org":
        guard.forget_org(10)
    elif forget == "all":
        guard.forget_all()
    else:  # the app instance was deleted
        lookup.answer = None
        guard.check(20, force=True)

    assert ended == ended_leases


def test_guard_check_until_tells_how_long_its_answer_is_fresh(clock):
    guard = AccessGuard(
        lookup=Lookup(access()), on_refused=lambda org_id: None, ttl_s=0.5, clock=clock
    )

    until, answer = guard.check_until(20)
    clock.advance(0.3)

    assert guard.check_until(20) == (until, answer)
    assert until == clock() + 0.2


def test_process_guard_forgetting_an_org_ends_its_leases(monkeypatch, clock):
    monkeypatch.setattr(dek_cache.GUARD, "clock", clock)
    monkeypatch.setattr(dek_cache.CACHE, "clock", clock)
    entry = dek_cache.CACHE.put(cipher(78), org_id=123457, app_instance_id=654322)
    dek_cache.CACHE.grant(entry, until=clock() + 0.5, epoch=dek_cache.CACHE.lease_epoch)
    try:
        dek_cache.GUARD.forget_org(123457)

        assert entry.lease_until < clock()
    finally:
        dek_cache.CACHE.discard(78)
