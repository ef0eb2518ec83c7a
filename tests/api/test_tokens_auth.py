"""Who a token lets in: expiry, revocation, the creator's role, vendor staff, bad headers."""

from datetime import timedelta

import pytest
from django.utils import timezone
from freezegun import freeze_time

from api.models import ApiToken
from api.services import TokenRefused, revoke_api_token
from api.tokens import hash_secret, parse_token
from audit.models import AuditEvent
from orgs.models import Membership
from tests.api.support import bearer, make_token
from tests.factories import OrganizationFactory, org_admin, staff_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def org():
    return OrganizationFactory(name="Acme API")


@pytest.fixture
def admin(org):
    return org_admin(org)


def _orgs(client, token):
    return client.get("/api/v1/orgs", **bearer(token))


def test_a_valid_token_sees_its_own_organization_only(client, org, admin):
    OrganizationFactory(name="Someone Else")
    answer = _orgs(client, make_token(org, admin))
    assert answer.status_code == 200
    assert answer.json() == [
        {"id": org.pk, "name": "Acme API", "plan": org.plan, "cloud": org.cloud}
    ]


def test_the_token_is_stored_only_as_a_hash(org, admin):
    whole = make_token(org, admin)
    token = ApiToken.objects.get()
    _prefix, secret = parse_token(whole)
    assert whole.startswith(f"byok_{token.prefix}_")
    assert token.secret_hash == hash_secret(secret)
    assert secret not in str(ApiToken.objects.values().get())


def test_no_or_malformed_token_is_401_problem_json_with_a_bearer_challenge(client):
    for headers in ({}, bearer("nope"), bearer("byok_0123456789ab_" + "x" * 43)):
        answer = client.get("/api/v1/orgs", **headers)
        assert answer.status_code == 401
        assert answer["Content-Type"] == "application/problem+json"
        assert answer["WWW-Authenticate"].startswith("Bearer")
        problem = answer.json()
        assert problem["status"] == 401 and problem["title"] and problem["type"]
        assert problem["instance"] == f"urn:byok-portal:request:{answer['X-Request-ID']}"


def test_a_wrong_secret_with_a_real_prefix_is_401(client, org, admin):
    whole = make_token(org, admin)
    forged = whole[:-4] + ("AAAA" if not whole.endswith("AAAA") else "BBBB")
    assert _orgs(client, forged).status_code == 401


def test_an_expired_token_is_401(client, org, admin):
    whole = make_token(org, admin, days=1)
    with freeze_time(timezone.now() + timedelta(days=1, seconds=1)):
        assert _orgs(client, whole).status_code == 401


def test_a_revoked_token_is_401_and_its_revocation_is_audited(client, org, admin):
    whole = make_token(org, admin)
    token = ApiToken.objects.get()
    revoke_api_token(org=org, token_id=token.pk, actor=admin)
    assert _orgs(client, whole).status_code == 401
    event = AuditEvent.objects.get(event_name="RevokeApiToken")
    assert event.record["requestParameters"]["tokenId"] == token.display_id
    with pytest.raises(TokenRefused):
        revoke_api_token(org=org, token_id=token.pk, actor=admin)


def test_token_stops_working_when_its_creator_is_no_longer_an_admin(client, org, admin):
    whole = make_token(org, admin)
    Membership.objects.filter(user=admin, organization=org).update(role=Membership.Role.MEMBER)
    assert _orgs(client, whole).status_code == 401
    Membership.objects.filter(user=admin, organization=org).delete()
    assert _orgs(client, whole).status_code == 401


def test_vendor_staff_can_neither_create_nor_use_org_tokens(client, org, admin):
    rep = staff_user("Account representatives")
    Membership.objects.create(user=rep, organization=org, role=Membership.Role.ADMIN)
    with pytest.raises(TokenRefused):
        make_token(org, rep)
    whole = make_token(org, admin)
    admin.is_staff = True
    admin.save()
    assert _orgs(client, whole).status_code == 401


def test_token_creation_is_audited_without_the_secret(org, admin):
    whole = make_token(org, admin)
    event = AuditEvent.objects.get(event_name="CreateApiToken")
    assert event.record["requestParameters"]["scopes"] == [
        "read",
        "audit:read",
        "keys:revoke",
        "setup:write",
    ]
    assert parse_token(whole)[1] not in str(event.record)


def test_expiry_is_required_within_a_year(org, admin):
    with pytest.raises(TokenRefused):
        make_token(org, admin, days=366)
    with pytest.raises(TokenRefused):
        make_token(org, admin, days=-1)


def test_last_use_is_recorded_at_most_once_a_minute(client, org, admin):
    whole = make_token(org, admin)
    start = timezone.now()
    with freeze_time(start):
        _orgs(client, whole)
    first = ApiToken.objects.get().last_used_at
    assert first == start and ApiToken.objects.get().last_used_ip == "127.0.0.1"
    with freeze_time(start + timedelta(seconds=30)):
        _orgs(client, whole)
    assert ApiToken.objects.get().last_used_at == first
    with freeze_time(start + timedelta(seconds=61)):
        _orgs(client, whole)
    assert ApiToken.objects.get().last_used_at == start + timedelta(seconds=61)
