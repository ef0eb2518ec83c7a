"""The API kill switch pulled twice at once on PostgreSQL: one revocation, the same answer."""

import pytest
from django.test import Client

from api.models import IdempotencyRecord
from audit.models import AuditEvent
from connections.models import ByokConnection
from tests.api.support import make_token
from tests.factories import OrganizationFactory, org_admin
from tests.integration.test_request_races import race

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def org_and_token():
    org = OrganizationFactory(plan="enterprise")
    ByokConnection.objects.create(
        organization=org, aws_account_id="565656565656", location="us", state="active"
    )
    return org, make_token(org, org_admin(org), ["keys:revoke"])


def _revoke(org, token, key):
    answer = Client().post(
        f"/api/v1/orgs/{org.pk}/byok/revoke",
        {"reason": "two playbooks at once"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_IDEMPOTENCY_KEY=key,
    )
    return answer.status_code, answer.json()


def test_same_key_at_once_revokes_once_and_both_get_the_same_answer(org_and_token):
    org, token = org_and_token
    outcomes = race([lambda: _revoke(org, token, "incident-7")] * 2)
    assert [kind for kind, _ in outcomes] == ["ok", "ok"], outcomes
    (status_a, body_a), (status_b, body_b) = (value for _, value in outcomes)
    assert status_a == status_b == 200 and body_a == body_b
    assert AuditEvent.objects.filter(event_name="RevokeKeyAccess").count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_different_keys_at_once_one_revokes_the_other_is_told_why(org_and_token):
    org, token = org_and_token
    outcomes = race([lambda: _revoke(org, token, "a"), lambda: _revoke(org, token, "b")])
    statuses = sorted(value[0] for _, value in outcomes)
    assert statuses == [200, 409], outcomes
    assert ByokConnection.objects.get(organization=org).state == "revoked"
    assert AuditEvent.objects.filter(event_name="RevokeKeyAccess").count() == 1
