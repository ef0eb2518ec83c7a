"""The kit's key-policy Deny statements for one site or one app: they match exactly the
encryption context the portal sends for that scope, and the kit page shows them."""

import json

import pytest

from connections.services.scope_monitor import app_context
from dataplane.access_guard import lookup_access
from setup import scope_policies
from tests.factories import AppInstanceFactory, OrganizationFactory, SiteFactory
from tests.setup import test_onboarding as kit
from tests.setup.test_onboarding import ROLE_ARN, kit_url, login

pytestmark = pytest.mark.django_db
setup_request = kit.setup_request


def _matches(statement: dict, context: dict) -> bool:
    """StringEquals on kms:EncryptionContext:<key>, as AWS evaluates it."""
    wanted = statement["Condition"]["StringEquals"]
    return all(context.get(k.rsplit(":", 1)[-1]) == v for k, v in wanted.items())


def test_a_site_deny_matches_every_app_of_the_site_and_nothing_else():
    org = OrganizationFactory()
    site, other_site = SiteFactory(organization=org), SiteFactory(organization=org)
    jira = AppInstanceFactory(site=site, app="jira", encryption="byok")
    confluence = AppInstanceFactory(site=site, app="confluence", encryption="byok")
    elsewhere = AppInstanceFactory(site=other_site, app="jira", encryption="byok")
    deny = scope_policies.scope_deny_statement(role_arn=ROLE_ARN, org_id=org.pk, site=site.name)

    # The contexts the data plane and the monitor really send.
    contexts = {app.pk: lookup_access(app.pk).encryption_context for app in (jira, confluence)}
    assert all(_matches(deny, c) for c in contexts.values())
    assert not _matches(deny, lookup_access(elsewhere.pk).encryption_context)
    assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": ROLE_ARN}
    assert "kms:DescribeKey" not in deny["Action"]  # a denied scope is told from a dead key


def test_an_app_deny_matches_only_that_app():
    org = OrganizationFactory()
    site = SiteFactory(organization=org)
    jira = AppInstanceFactory(site=site, app="jira", encryption="byok")
    confluence = AppInstanceFactory(site=site, app="confluence", encryption="byok")
    deny = scope_policies.scope_deny_statement(
        role_arn=ROLE_ARN, org_id=org.pk, site=site.name, app="jira"
    )

    assert _matches(deny, app_context(jira))
    assert not _matches(deny, app_context(confluence))
    assert deny["Sid"].isalnum()


def test_the_key_policy_with_denies_keeps_the_allow_and_adds_the_deny():
    deny = scope_policies.scope_deny_statement(role_arn=ROLE_ARN, org_id=7, site="acme-secure")
    policy = scope_policies.key_policy_with_denies(
        account_id="210987654321", role_arn=ROLE_ARN, denies=[deny]
    )
    assert [s["Effect"] for s in policy["Statement"]] == ["Allow", "Allow", "Deny"]
    json.dumps(policy)  # plain JSON, ready for put-key-policy


def test_the_kit_page_offers_a_deny_for_the_requested_site_and_each_app(client, setup_request):
    org, req = setup_request["org"], setup_request["req"]
    login(client, setup_request["admin"])
    body = client.get(kit_url(org, req)).content.decode()
    assert "Revoke one site or one app yourself" in body
    assert "Deny site acme-secure" in body and "Deny jira on acme-secure" in body
    assert "kms:EncryptionContext:site" in body
    assert "aws kms put-key-policy --region eu-west-1" in body
