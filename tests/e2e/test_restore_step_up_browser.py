"""Restore needs the same step-up as revoke, in a browser: two-factor (set up if missing), a
recent sign-in, the organization's name and the password."""

import re

import pytest
from playwright.sync_api import expect

from connections import services as revocation
from connections.models import ByokConnection
from demo.acme import seed_demo_byok
from demo.seed import seed_demo_world
from orgs.models import User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def revoked_acme(moto_reset):
    orgs = seed_demo_world()
    seed_demo_byok()
    acme = orgs["Acme Corp"]
    admin = User.objects.get(email="admin@acme.example")
    revocation.revoke_key_access(org=acme, actor=admin, reason="Security drill")
    return acme


def test_admin_without_an_authenticator_is_sent_to_set_one_up_for_restore_as_for_revoke(
    page, login, revoked_acme
):
    login(page, "admin@acme.example", otp=False)
    for step in ("restore", "revoke"):
        page.goto(f"/orgs/{revoked_acme.pk}/byok/{step}/")
        expect(page).to_have_url(
            re.compile(
                rf"/accounts/2fa/setup/\?next=%2Forgs%2F{revoked_acme.pk}%2Fbyok%2F{step}%2F"
            )
        )
        expect(page.get_by_role("button", name="Resume BYOK apps")).to_have_count(0)
    assert ByokConnection.objects.get(organization=revoked_acme).state == "revoked"


def test_restore_form_asks_for_the_name_and_the_password(page, login, revoked_acme):
    login(page, "admin@acme.example", otp=True)
    page.goto(f"/orgs/{revoked_acme.pk}/byok/restore/")
    page.get_by_label("I have allowed the vendor again").check()
    page.get_by_label("Type the organization's name to confirm").fill("acme")
    page.get_by_label("Your password").fill("wrong")
    page.get_by_role("button", name="Resume BYOK apps").click()
    expect(page.locator("main")).to_contain_text("Type Acme Corp exactly")
    expect(page.locator("main")).to_contain_text("That is not your password")
    assert ByokConnection.objects.get(organization=revoked_acme).state == "revoked"

    page.get_by_label("I have allowed the vendor again").check()
    page.get_by_label("Type the organization's name to confirm").fill("Acme Corp")
    page.get_by_label("Your password").fill("byok-demo-pass")
    page.get_by_role("button", name="Resume BYOK apps").click()
    expect(page.locator("#restore-state")).to_contain_text("Access restored", timeout=20_000)
