import pytest
from django.urls import reverse

from tests.factories import (
    PASSWORD,
    AppInstanceFactory,
    OrganizationFactory,
    SiteFactory,
    org_admin,
    org_member,
    staff_user,
)
from tests.support import login_staff

pytestmark = pytest.mark.django_db


def login(client, user):
    assert client.login(username=user.email, password=PASSWORD)


def test_anonymous_visitor_is_sent_to_login():
    from django.test import Client

    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_dashboard_shows_only_the_users_own_orgs(client):
    mine = OrganizationFactory(name="Mine Inc")
    theirs = OrganizationFactory(name="Theirs Ltd")
    SiteFactory(organization=theirs, name="theirs-secret-site")
    user = org_admin(mine)
    AppInstanceFactory(site=SiteFactory(organization=mine, name="mine-site"))
    login(client, user)
    body = client.get("/").content.decode()
    assert "Mine Inc" in body
    assert "mine-site" in body
    assert "Theirs Ltd" not in body
    assert "theirs-secret-site" not in body


def test_dashboard_shows_eligibility_and_app_status(client):
    org = OrganizationFactory(name="Gov Org", cloud="government")
    AppInstanceFactory(site=SiteFactory(organization=org), app="confluence", status="suspended")
    login(client, org_admin(org))
    body = client.get("/").content.decode()
    assert "not available for Government Cloud" in body
    assert "badge-suspended" in body


def test_admin_of_another_org_gets_404_like_a_missing_org(client):
    other = OrganizationFactory()
    login(client, org_admin())
    assert client.get(f"/orgs/{other.pk}/").status_code == 404
    assert client.get("/orgs/999999/").status_code == 404
    assert client.get(f"/orgs/{other.pk}/byok/").status_code == 404
    assert client.get(f"/orgs/{other.pk}/audit/").status_code == 404


def test_member_sees_overview_but_not_key_management_or_audit(client):
    org = OrganizationFactory(name="Member Org")
    login(client, org_member(org))
    overview = client.get(f"/orgs/{org.pk}/")
    assert overview.status_code == 200
    assert "Member Org" in overview.content.decode()
    assert client.get(f"/orgs/{org.pk}/byok/").status_code == 403
    assert client.get(f"/orgs/{org.pk}/audit/").status_code == 403
    assert client.post(f"/orgs/{org.pk}/byok/").status_code == 403


def test_org_admin_reaches_byok_and_audit_pages(client):
    org = OrganizationFactory()
    login(client, org_admin(org))
    assert client.get(f"/orgs/{org.pk}/byok/").status_code == 200
    assert client.get(f"/orgs/{org.pk}/audit/").status_code == 200


def test_staff_see_links_to_staff_pages_and_admin(client):
    login_staff(client, staff_user("Account representatives"))
    body = client.get("/").content.decode()
    assert reverse("review:queue") in body
    assert reverse("admin:index") in body


def test_customers_see_no_staff_links_and_get_403_on_staff_pages(client):
    login(client, org_admin())
    body = client.get("/").content.decode()
    assert reverse("review:queue") not in body
    assert reverse("admin:index") not in body
    assert client.get(reverse("review:queue")).status_code == 403


def test_pages_are_served_with_strict_security_headers(client):
    response = client.get("/accounts/login/")
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
