import pytest

from connections.models import ByokConnection, RegionalKey
from tests.customer_aws import CUSTOMER_ACCOUNT
from tests.factories import AppInstanceFactory, OrganizationFactory, SiteFactory, org_admin


@pytest.fixture
def byok_org(db):
    """An enterprise org with an active BYOK connection, a key and a BYOK Jira."""
    org = OrganizationFactory(name="Acme Kill Switch", plan="enterprise")
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=CUSTOMER_ACCOUNT, location="us", state="active"
    )
    RegionalKey.objects.create(
        connection=connection,
        region="us-east-1",
        key_arn=f"arn:aws:kms:us-east-1:{CUSTOMER_ACCOUNT}:key/11111111-2222-3333-4444-555555555555",
    )
    site = SiteFactory(organization=org, name="acme-killswitch")
    AppInstanceFactory(site=site, app="jira", encryption="byok", status="active")
    return org


@pytest.fixture
def byok_admin(byok_org):
    return org_admin(byok_org, user__email="admin@killswitch.example")
