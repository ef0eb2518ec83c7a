"""Scoped revocation in the data plane: exactly the revoked scope is refused, in a process whose
access guard answer goes stale (every other process), and everything else keeps working.

The world: one org, site A with Jira and Confluence, site B with Jira. Each app has an *old*
record (sealed in the old period by a data key used from 3 days ago until 1 day ago) and a
*new* record (sealed by the key in use since then). The period revoked is "3 days and 1 hour
ago … 2 days ago": it covers every old key and no new one.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from connections import services
from connections.models import ByokConnection, DataKey, RegionalKey, ScopedRevocation
from connections.services import Scope
from core.locations import get_location
from dataplane import dek_cache
from dataplane import records as dataplane
from dataplane.records import AppSuspended
from orgs.models import AppInstance
from tests.dataplane import test_dataplane as base
from tests.dataplane.test_dataplane import ACCOUNT, cold_process, customer_kms
from tests.factories import AppInstanceFactory, OrganizationFactory, SiteFactory, org_admin

pytestmark = pytest.mark.django_db
moto = base.moto  # moto in-process and a cold process for every test (autouse)
clock = base.clock

APPS = ("a-jira", "a-confluence", "b-jira")

# What each scope refuses, written out (not read from the code): for each scope, the apps whose
# old records / new records / new writes are refused. Anything not listed keeps working.
REFUSED = {
    "org": {
        "a-jira": {"old", "new", "write"},
        "a-confluence": {"old", "new", "write"},
        "b-jira": {"old", "new", "write"},
    },
    "site-a": {"a-jira": {"old", "new", "write"}, "a-confluence": {"old", "new", "write"}},
    "app-a-jira": {"a-jira": {"old", "new", "write"}},
    "period-old": {"a-jira": {"old"}, "a-confluence": {"old"}, "b-jira": {"old"}},
}


@pytest.fixture
def world(clock):
    org = OrganizationFactory()
    admin = org_admin(org)
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=ACCOUNT, location="us", state="active"
    )
    for region in get_location("us").regions:
        arn = customer_kms(region).create_key(KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["Arn"]
        RegionalKey.objects.create(
            connection=connection, region=region, key_arn=arn, status="enabled"
        )
    site_a = SiteFactory(organization=org, name=f"site-a-{org.pk}")
    site_b = SiteFactory(organization=org, name=f"site-b-{org.pk}")
    byok = {"encryption": AppInstance.Encryption.BYOK, "status": "active"}
    apps = {
        "a-jira": AppInstanceFactory(site=site_a, app="jira", **byok),
        "a-confluence": AppInstanceFactory(site=site_a, app="confluence", **byok),
        "b-jira": AppInstanceFactory(site=site_b, app="jira", **byok),
    }
    now = timezone.now()
    old, new = {}, {}
    for name, app in apps.items():
        old[name] = dataplane.store_record(app_instance=app, kind="issue", plaintext=b"old")
        DataKey.objects.filter(app_instance=app).update(
            created_at=now - timedelta(days=3), is_current=False
        )
    cold_process()  # the next writes make each app's next data key
    for name, app in apps.items():
        new[name] = dataplane.store_record(app_instance=app, kind="issue", plaintext=b"new")
        DataKey.objects.filter(app_instance=app, is_current=True).update(
            created_at=now - timedelta(days=1)
        )
    return {
        "org": org,
        "admin": admin,
        "sites": {"a": site_a, "b": site_b},
        "apps": apps,
        "old": old,
        "new": new,
        "now": now,
    }


def _revoke(world, scope_name: str):
    org, admin, now = world["org"], world["admin"], world["now"]
    if scope_name == "org":
        return services.revoke_key_access(org=org, actor=admin, reason="drill")
    scope = {
        "site-a": lambda: Scope.site(world["sites"]["a"].pk),
        "app-a-jira": lambda: Scope.app(world["apps"]["a-jira"].pk),
        "period-old": lambda: Scope.period(
            now - timedelta(days=3, hours=1), now - timedelta(days=2)
        ),
    }[scope_name]()
    return services.revoke_scope(org=org, actor=admin, scope=scope, reason="drill")


def _outcomes(world) -> dict[str, set[str]]:
    """What each app is refused now: reading its old record, its new one, writing."""
    refused: dict[str, set[str]] = {}
    for name, app in world["apps"].items():
        for what in ("old", "new"):
            try:
                dataplane.read_record(app_instance=app, record_id=world[what][name].pk)
            except AppSuspended:
                refused.setdefault(name, set()).add(what)
        try:
            dataplane.store_record(app_instance=app, kind="comment", plaintext=b"later")
        except AppSuspended:
            refused.setdefault(name, set()).add("write")
    return refused


@pytest.mark.parametrize("scope_name", list(REFUSED))
def test_each_scope_refuses_exactly_its_data_in_every_process(world, clock, scope_name):
    assert _outcomes(world) == {}  # warm: every key cached and leased in this process
    _revoke(world, scope_name)
    # Another process learns of it when its guard's answer goes stale (DEK_GUARD_TTL_S); its
    # warm cache and leases do not keep the revoked data readable.
    clock.advance(dek_cache.GUARD.ttl_s + 0.01)

    assert _outcomes(world) == REFUSED[scope_name]


def test_a_revoked_app_keeps_its_siblings_cached_keys(world, clock):
    _outcomes(world)
    sibling = world["apps"]["a-confluence"]
    cached_before = {k for k in dek_cache.CACHE._entries if k in _dek_ids(sibling)}

    _revoke(world, "app-a-jira")
    clock.advance(dek_cache.GUARD.ttl_s + 0.01)
    _outcomes(world)

    assert cached_before and cached_before <= set(dek_cache.CACHE._entries)
    assert not set(dek_cache.CACHE._entries) & _dek_ids(world["apps"]["a-jira"])


def _dek_ids(app) -> set[int]:
    return set(DataKey.objects.filter(app_instance=app).values_list("pk", flat=True))


def test_a_period_reaching_now_moves_new_writes_to_a_fresh_data_key(world, clock):
    app = world["apps"]["b-jira"]
    current = DataKey.objects.get(app_instance=app, is_current=True)
    revocation = services.revoke_scope(
        org=world["org"],
        actor=world["admin"],
        scope=Scope.period(world["now"] - timedelta(hours=2), timezone.now()),
        reason="laptop stolen",
    )
    clock.advance(dek_cache.GUARD.ttl_s + 0.01)

    assert current.pk in set(revocation.data_keys.values_list("pk", flat=True))
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=b"after")
    assert record.data_key_id != current.pk
    assert dataplane.read_record(app_instance=app, record_id=record.pk) == b"after"
    with pytest.raises(AppSuspended) as refused:
        dataplane.read_record(app_instance=app, record_id=world["new"]["b-jira"].pk)
    assert refused.value.cause == "period-revoked"


def test_the_period_covers_whole_data_keys_and_says_exactly_which_span(world):
    now = world["now"]
    revocation = _revoke(world, "period-old")

    old_keys = {r.data_key_id for r in world["old"].values()}
    assert set(revocation.data_keys.values_list("pk", flat=True)) == old_keys
    # The span of the keys' use, which contains the requested period: one key's granularity.
    assert revocation.covered_from == now - timedelta(days=3)
    assert revocation.covered_to == now - timedelta(days=1)


def test_restoring_a_scope_brings_its_data_back(world, clock):
    _revoke(world, "app-a-jira")
    revocation = ScopedRevocation.objects.get()
    services.restore_scope(org=world["org"], actor=world["admin"], revocation_id=revocation.pk)
    services.verify_scope_restore(revocation_id=revocation.pk)
    clock.advance(dek_cache.GUARD.ttl_s + 0.01)

    assert ScopedRevocation.objects.get().state == "restored"
    assert _outcomes(world) == {}
