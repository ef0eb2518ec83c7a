"""Issue 4 end to end in a browser: revoke, restore after re-enabling the key, and expiry."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from connections import services as revocation
from connections.models import ByokConnection
from demo import customer_side
from demo.acme import ACME_AWS_ACCOUNT, seed_demo_byok
from demo.seed import seed_demo_world

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def acme(moto_reset):
    orgs = seed_demo_world()
    seed_demo_byok()
    return orgs["Acme Corp"]


def revoke_in_portal(page, org):
    page.goto(f"/orgs/{org.pk}/byok/revoke/")
    page.get_by_label("Why are you revoking access?").fill("Security drill")
    page.get_by_label("Type the organization's name to confirm").fill(org.name)
    page.get_by_label("Your password").fill("byok-demo-pass")
    page.get_by_role("button", name="Revoke access now").click()
    expect(page.locator(".messages")).to_contain_text("Key access revoked")


def check_now(page, org):
    """The BYOK page is read-only: "Check now" reads one record of each app (eager here)."""
    page.goto(f"/orgs/{org.pk}/byok/")
    page.get_by_role("button", name="Check now").click()
    expect(page.locator(".messages")).to_contain_text("Reading one record")
    page.goto(f"/orgs/{org.pk}/byok/")


def test_revoke_takes_apps_offline_and_restore_brings_them_back(page, login, acme):
    login(page, "admin@acme.example", otp=True)
    check_now(page, acme)
    for app in ("jira", "confluence"):
        expect(page.locator(f"tr[data-app='{app}']")).to_contain_text("Readable")

    revoke_in_portal(page, acme)
    # Every page now carries the banner for the org's admins.
    expect(page.locator("[data-banner='byok-revoked']")).to_contain_text("Acme Corp")
    check_now(page, acme)
    expect(page.locator("[data-countdown='restore-window']")).to_contain_text("left of the")
    for app in ("jira", "confluence"):
        row = page.locator(f"tr[data-app='{app}']")
        expect(row).to_contain_text("Suspended")
        expect(row).to_contain_text("Unreadable")

    # The customer also disables the key in AWS; the monitor ticks it on the revoke page.
    connection = ByokConnection.objects.get(organization=acme)
    key = connection.keys.get(region="us-east-1")
    customer_side.disable_customer_key(
        account_id=ACME_AWS_ACCOUNT, region="us-east-1", key_arn=key.key_arn
    )
    revocation.check_connection_health(connection_id=connection.pk)
    page.goto(f"/orgs/{acme.pk}/byok/revoke/")
    expect(page.locator("#customer-side tr", has_text="us-east-1")).to_contain_text("Done")

    # Re-enable the key in AWS, then ask to resume.
    customer_side.enable_customer_key(
        account_id=ACME_AWS_ACCOUNT, region="us-east-1", key_arn=key.key_arn
    )
    page.goto(f"/orgs/{acme.pk}/byok/restore/")
    page.get_by_label("I have allowed the vendor again").check()
    # Restoring needs the same confirmation as revoking: the org's name and the password.
    page.get_by_label("Type the organization's name to confirm").fill(acme.name)
    page.get_by_label("Your password").fill("byok-demo-pass")
    page.get_by_role("button", name="Resume BYOK apps").click()
    expect(page.locator("#restore-state")).to_contain_text("Access restored", timeout=20_000)
    check_now(page, acme)
    for app in ("jira", "confluence"):
        row = page.locator(f"tr[data-app='{app}']")
        expect(row).to_contain_text("Active")
        expect(row).to_contain_text("Readable")


def test_revoke_left_past_its_deadline_expires_and_refuses_restore(page, login, acme):
    login(page, "admin@acme.example", otp=True)
    revoke_in_portal(page, acme)
    # The restore window passes.
    ByokConnection.objects.filter(organization=acme).update(
        restore_deadline=timezone.now() - timedelta(days=1),
        revoked_at=timezone.now() - timedelta(days=16),
    )
    page.goto(f"/orgs/{acme.pk}/byok/restore/")
    expect(page.locator("main")).to_contain_text("The restore window has closed")
    expect(page.get_by_role("button", name="Resume BYOK apps")).to_have_count(0)
    revocation.expire_overdue_connections()
    page.goto(f"/orgs/{acme.pk}/byok/")
    expect(page.locator("main")).to_contain_text("Expired")
