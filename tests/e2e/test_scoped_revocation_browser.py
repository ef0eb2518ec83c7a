"""Scoped revocation in a browser: an org admin revokes one app, sees the other still active
and readable, then restores it with the same step-up as the kill switch."""

import pytest
from playwright.sync_api import expect

from tests.e2e.test_kill_switch_browser import acme, check_now  # noqa: F401 — fixture

pytestmark = pytest.mark.django_db(transaction=True)


def test_admin_revokes_one_app_sees_the_other_active_and_restores_it(page, login, acme):  # noqa: F811
    login(page, "admin@acme.example", otp=True)
    page.goto(f"/orgs/{acme.pk}/byok/")
    jira, confluence = (
        page.locator("tr[data-app='jira']"),
        page.locator("tr[data-app='confluence']"),
    )
    expect(jira.locator(".scope-access")).to_contain_text("Active")

    jira.get_by_role("link", name="Revoke…").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Jira on acme-secure")
    expect(page.locator(".warning-card")).to_contain_text("Your other apps keep working")
    page.get_by_label("Why are you revoking access?").fill("Token leaked in a Jira plugin")
    page.get_by_label("Type the organization's name to confirm").fill(acme.name)
    page.get_by_label("Your password").fill("byok-demo-pass")
    page.get_by_role("button", name="Revoke access for Jira on acme-secure").click()
    expect(page.locator(".messages")).to_contain_text("Key access revoked for Jira on acme-secure")

    expect(jira.locator(".scope-access")).to_contain_text("Revoked")
    expect(jira.locator(".scope-access")).to_contain_text("Restore possible until")
    expect(confluence.locator(".scope-access")).to_contain_text("Active")
    expect(confluence.get_by_role("link", name="Revoke…")).to_be_visible()
    check_now(page, acme)
    expect(jira).to_contain_text("Unreadable")
    expect(confluence).to_contain_text("Readable")
    expect(confluence).not_to_contain_text("Unreadable")

    jira.get_by_role("link", name="Restore…").click()
    page.get_by_label("I want this data readable again").check()
    page.get_by_label("Type the organization's name to confirm").fill(acme.name)
    page.get_by_label("Your password").fill("byok-demo-pass")
    page.get_by_role("button", name="Restore access for Jira on acme-secure").click()
    expect(page.locator(".messages")).to_contain_text("Checking your keys for Jira on acme-secure")
    page.goto(f"/orgs/{acme.pk}/byok/")
    expect(jira.locator(".scope-access")).to_contain_text("Active")
    check_now(page, acme)
    expect(jira).to_contain_text("Readable")
    expect(jira).not_to_contain_text("Unreadable")
