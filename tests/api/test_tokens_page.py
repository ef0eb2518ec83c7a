"""The org admin's API tokens page: create (shown once, step-up), list, revoke."""

import pytest

from api.models import ApiToken
from audit.models import AuditEvent
from tests.api.support import bearer
from tests.factories import OrganizationFactory, org_admin, org_member
from tests.support import login_verified, make_auth_stale

pytestmark = pytest.mark.django_db


@pytest.fixture
def org():
    return OrganizationFactory(name="Acme Tokens")


@pytest.fixture
def admin(org):
    return org_admin(org)


def _create(client, org, **data):
    body = {"name": "SOAR", "scopes": ["read", "keys:revoke"], "lifetime_days": "90", **data}
    return client.post(f"/orgs/{org.pk}/api-tokens/", body)


def test_admin_creates_a_token_shown_once_that_works(client, org, admin):
    login_verified(client, admin)
    answer = _create(client, org)
    assert answer.status_code == 200
    token = ApiToken.objects.get()
    html = answer.content.decode()
    start = html.index("byok_" + token.prefix)
    whole = html[start : start + len("byok_") + 12 + 1 + 43]
    assert "no-store" in answer["Cache-Control"] or "max-age=0" in answer["Cache-Control"]
    assert client.get("/api/v1/orgs", **bearer(whole)).status_code == 200
    assert token.scopes == ["read", "keys:revoke"] and token.created_by == admin
    # Shown once: the list shows the prefix only.
    assert whole not in client.get(f"/orgs/{org.pk}/api-tokens/").content.decode()
    assert AuditEvent.objects.filter(event_name="CreateApiToken").count() == 1


def test_creating_a_token_needs_a_recent_sign_in(client, org, admin):
    login_verified(client, admin)
    make_auth_stale(client, 3600)
    answer = _create(client, org)
    assert answer.status_code == 302 and "reauth" in answer["Location"]
    assert not ApiToken.objects.exists()


def test_creating_a_token_needs_two_factor(client, org, admin):
    client.force_login(admin)
    answer = _create(client, org)
    assert answer.status_code == 302 and "2fa" in answer["Location"]
    assert not ApiToken.objects.exists()


def test_members_cannot_see_or_create_tokens(client, org):
    login_verified(client, org_member(org))
    assert client.get(f"/orgs/{org.pk}/api-tokens/").status_code == 403
    assert _create(client, org).status_code == 403


def test_a_token_without_scopes_is_refused_with_a_form_error(client, org, admin):
    login_verified(client, admin)
    answer = _create(client, org, scopes=[])
    assert answer.status_code == 400
    assert "Choose at least one scope." in answer.content.decode()


def test_admin_revokes_a_token_and_it_stops_working(client, org, admin):
    login_verified(client, admin)
    _create(client, org)
    token = ApiToken.objects.get()
    answer = client.post(f"/orgs/{org.pk}/api-tokens/{token.pk}/revoke/")
    assert answer.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by == admin
    assert AuditEvent.objects.filter(event_name="RevokeApiToken").count() == 1
    page = client.get(f"/orgs/{org.pk}/api-tokens/").content.decode()
    assert "Revoked" in page
