"""Support's read-only admin of API tokens: looked up, never changed, the hash never shown."""

import pytest
from django.urls import reverse

from api.models import ApiToken
from orgs.staff_roles import ACCOUNT_REPS, SUPPORT_STAFF
from tests.api.support import make_token
from tests.factories import OrganizationFactory, org_admin, staff_user
from tests.support import login_staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def token():
    org = OrganizationFactory(name="Acme Admin Tokens")
    make_token(org, org_admin(org), ["read"], name="SIEM pull")
    return ApiToken.objects.get()


def test_support_looks_tokens_up_without_the_hash(client, token):
    login_staff(client, staff_user(SUPPORT_STAFF))
    listed = client.get(reverse("admin:api_apitoken_changelist")).content.decode()
    assert "SIEM pull" in listed and token.display_id in listed
    detail = client.get(reverse("admin:api_apitoken_change", args=[token.pk]))
    assert detail.status_code == 200
    page = detail.content.decode()
    assert token.secret_hash not in page and token.secret_hash not in listed
    assert 'name="name"' not in page  # read-only: no form fields
    assert client.post(reverse("admin:api_apitoken_delete", args=[token.pk])).status_code == 403


def test_account_reps_do_not_see_tokens(client, token):
    login_staff(client, staff_user(ACCOUNT_REPS))
    assert client.get(reverse("admin:api_apitoken_changelist")).status_code == 403
