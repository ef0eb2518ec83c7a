"""Every page that asks for a password goes through the sign-in throttle, hides the password
(and the webhook secret) from error reports, and vendor staff pass two-factor by what they may
do, not by a flag."""

import pytest
from django.test import Client
from django.urls import reverse

from connections.models import ByokConnection
from orgs.staff_roles import ACCOUNT_REPS
from tests.factories import PASSWORD, OrganizationFactory, UserFactory, org_admin
from tests.support import login_verified

pytestmark = pytest.mark.django_db

IP = "198.51.100.30"


@pytest.fixture
def byok():
    org = OrganizationFactory(name="Throttle Org")
    admin = org_admin(org)
    ByokConnection.objects.create(
        organization=org, aws_account_id="210987654321", location="us", state="active"
    )
    return org, admin


def revoke(client, org, password):
    return client.post(
        reverse("connections:revoke", args=[org.pk]),
        {"reason": "drill", "confirm_name": org.name, "password": password},
        REMOTE_ADDR=IP,
    )


def test_wrong_passwords_on_the_revoke_form_lock_it_like_a_sign_in(client, byok):
    org, admin = byok
    login_verified(client, admin)
    statuses = [revoke(client, org, f"guess-{i}").status_code for i in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    # Locked: the right password is refused too, and nothing is revoked.
    assert revoke(client, org, PASSWORD).status_code == 429
    assert ByokConnection.objects.get(organization=org).state == "active"
    # The same lock covers the sign-in page (same address and e-mail address).
    signed_in = Client().post(
        reverse("login"), {"username": admin.email, "password": PASSWORD}, REMOTE_ADDR=IP
    )
    assert signed_in.status_code == 429


def test_a_locked_out_address_cannot_guess_on_the_revoke_form(client, byok):
    org, admin = byok
    for _ in range(5):
        Client().post(
            reverse("login"), {"username": admin.email, "password": "nope"}, REMOTE_ADDR=IP
        )
    login_verified(client, admin)
    assert revoke(client, org, PASSWORD).status_code == 429
    assert ByokConnection.objects.get(organization=org).state == "active"


def test_the_restore_form_is_throttled_too(client, byok):
    org, admin = byok
    ByokConnection.objects.filter(organization=org).update(state="revoked")
    login_verified(client, admin)
    url = reverse("connections:restore", args=[org.pk])
    data = {"confirm": "on", "confirm_name": org.name, "password": "nope"}
    statuses = [client.post(url, data, REMOTE_ADDR=IP).status_code for _ in range(5)]
    assert statuses[-1] == 429
    assert ByokConnection.objects.get(organization=org).state == "revoked"


def change_password(client, old):
    new = "a-much-Longer-passphrase-42"
    return client.post(
        reverse("password_change"),
        {"old_password": old, "new_password1": new, "new_password2": new},
        REMOTE_ADDR=IP,
    )


def test_wrong_current_passwords_on_the_password_page_lock_it(client):
    user = org_admin()
    client.force_login(user)
    statuses = [change_password(client, f"guess-{i}").status_code for i in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    assert change_password(client, PASSWORD).status_code == 429
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_the_password_page_still_changes_the_password(client):
    user = org_admin()
    client.force_login(user)
    assert change_password(client, PASSWORD).status_code == 302
    user.refresh_from_db()
    assert user.check_password("a-much-Longer-passphrase-42")


# --- Passwords and secrets never reach an error report ------------------------------------


def sensitive(response) -> list[str] | str:
    return response.wsgi_request.sensitive_post_parameters


def test_views_taking_a_password_or_secret_hide_it_from_error_reports(client, byok):
    org, admin = byok
    assert sensitive(client.post(reverse("login"), {"username": "a", "password": "b"})) == (
        "__ALL__"
    )
    login_verified(client, admin)
    posts = {
        reverse("security:reauthenticate"): {"password": "x"},
        reverse("connections:revoke", args=[org.pk]): {"password": "x"},
        reverse("connections:restore", args=[org.pk]): {"password": "x"},
        reverse("password_change"): {"old_password": "x"},
        reverse("integrations:webhook", args=[org.pk]): {"url": "https://x", "secret": "x"},
    }
    hidden = {url: sensitive(client.post(url, data)) for url, data in posts.items()}
    assert hidden == {
        reverse("security:reauthenticate"): ("password", "code"),
        reverse("connections:revoke", args=[org.pk]): ("password",),
        reverse("connections:restore", args=[org.pk]): ("password",),
        reverse("password_change"): "__ALL__",
        reverse("integrations:webhook", args=[org.pk]): ("secret",),
    }


# --- Two-factor by what staff may do ------------------------------------------------------


def test_a_representative_whose_staff_flag_is_off_still_needs_two_factor(client):
    from django.contrib.auth.models import Group

    rep = UserFactory(is_staff=False)
    rep.groups.add(Group.objects.get(name=ACCOUNT_REPS))
    client.force_login(rep)
    response = client.get("/staff/requests/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/setup/")


def test_a_customer_without_permissions_is_not_asked_for_two_factor(client):
    client.force_login(org_admin())
    assert client.get("/").status_code == 200
