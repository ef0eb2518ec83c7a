"""Fixtures of the re-encryption tests: an org in the USA location (two regions) with real moto
keys, its replacement keys, a rep, and records under several data keys."""

from types import SimpleNamespace

import pytest

from connections.models import ByokConnection, RegionalKey
from dataplane import dek_cache
from dataplane import records as dataplane
from dataplane.records import store_record
from orgs.models import AppInstance
from orgs.staff_roles import ACCOUNT_REPS
from setup.onboarding import KEY_ALIAS, REPLACEMENT_KEY_ALIAS
from tests.customer_aws import CUSTOMER_ACCOUNT
from tests.factories import (
    AppInstanceFactory,
    OrganizationFactory,
    SiteFactory,
    org_admin,
    staff_user,
)
from tests.reencryption.support import REGIONS, S, new_data_key


@pytest.fixture(autouse=True)
def _fresh_caches():
    dek_cache.purge_all()
    dataplane.forget_health_throttle()
    yield
    dek_cache.purge_all()


@pytest.fixture
def byok(customer_aws):
    """An active org in the USA location (two regions) with two BYOK apps and real moto keys."""
    org = OrganizationFactory(name="Acme Re")
    admin = org_admin(org)
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=CUSTOMER_ACCOUNT, location="us", state=S.ACTIVE
    )
    arns = customer_aws.set_up(REGIONS, external_id=connection.external_id)
    for region, arn in arns.items():
        RegionalKey.objects.create(
            connection=connection, region=region, key_arn=arn, alias=KEY_ALIAS, status="enabled"
        )
    site = SiteFactory(organization=org, name="acme-re")
    apps = [
        AppInstanceFactory(site=site, app=app, encryption="byok", status="active")
        for app in ("jira", "confluence")
    ]
    return SimpleNamespace(
        org=org, admin=admin, connection=connection, arns=arns, apps=apps, aws=customer_aws
    )


@pytest.fixture
def rep():
    return staff_user(ACCOUNT_REPS)


@pytest.fixture
def new_keys(byok):
    """The customer deployed the replacement-keys template: a new key per region, -next alias."""
    return {r: byok.aws.create_key(r, alias=REPLACEMENT_KEY_ALIAS) for r in REGIONS}


@pytest.fixture
def records(byok) -> dict[int, tuple[AppInstance, bytes]]:
    """Three DEKs per app, two records under each: record id → (app, plaintext)."""
    out = {}
    for app in byok.apps:
        for d in range(3):
            if d:
                new_data_key(app)
            for i in range(2):
                text = f"{app.app} secret {d}-{i}".encode()
                out[store_record(app_instance=app, kind="issue", plaintext=text).pk] = (app, text)
    dek_cache.purge_all()
    return out
