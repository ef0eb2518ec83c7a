"""Issue 3 end to end in a browser, on the demo: Globex asks, the rep verifies and provisions."""

import re

import pytest
from playwright.sync_api import expect

from connections.models import ByokConnection
from demo import customer_side
from demo.seed import seed_demo_world

pytestmark = pytest.mark.django_db(transaction=True)
GLOBEX_ACCOUNT = "333344445555"


def test_globex_requests_setup_rep_verifies_and_provisions(
    page, browser, live_server, login, settings
):
    orgs = seed_demo_world()
    globex = orgs["Globex"]

    # The Globex admin asks for BYOK.
    login(page, "other-admin@globex.example")
    page.goto(f"/orgs/{globex.pk}/byok/setup/")
    page.get_by_label("AWS account ID").fill(GLOBEX_ACCOUNT)
    page.get_by_label("New site name").fill("globex-secure")
    page.get_by_label("Location").select_option("us")
    page.get_by_label("Jira", exact=True).check()
    page.get_by_label("Confluence").check()
    page.get_by_role("button", name="Submit request").click()
    expect(page.get_by_role("heading", name=re.compile(r"Setup request #\d+"))).to_be_visible()
    external_id = ByokConnection.objects.get(organization=globex).external_id
    expect(page.locator("#external-id")).to_have_text(external_id)
    page.get_by_role("link", name="onboarding kit").click()
    expect(page.locator("body")).to_contain_text("us-west-2")

    # The customer deploys the onboarding kit in their AWS account (moto).
    customer_side.create_customer_side(
        account_id=GLOBEX_ACCOUNT,
        location_code="us",
        external_id=external_id,
        vendor_principal_arn=settings.VENDOR_PRINCIPAL_ARN,
    )

    # The rep claims, runs the preflight and provisions.
    rep_context = browser.new_context(base_url=live_server.url)
    rep = rep_context.new_page()
    login(rep, "rep@vendor.example")
    rep.goto("/staff/requests/")
    rep.get_by_role("link", name=re.compile(r"#\d+")).first.click()
    rep.get_by_role("button", name="Claim").click()
    expect(rep.locator(".messages")).to_contain_text("Request claimed")
    rep.get_by_role("button", name="Run preflight").click()
    expect(rep.locator("#preflight-report")).to_contain_text("Passed", timeout=20_000)
    expect(rep.locator("#preflight-report .badge-fail")).to_have_count(0)
    rep.get_by_role("button", name="Provision").click()
    expect(rep.locator(".messages")).to_contain_text("Provisioned")
    rep_context.close()

    # The Globex admin sees the BYOK apps active ("Check now" reads through the new keys: the
    # page itself is read-only) and the audit trail of each step.
    page.goto(f"/orgs/{globex.pk}/byok/")
    page.get_by_role("button", name="Check now").click()
    for app in ("jira", "confluence"):
        row = page.locator(f"tr[data-app='{app}']")
        expect(row).to_contain_text("Active")
        expect(row).to_contain_text("Readable")
    page.goto(f"/orgs/{globex.pk}/audit/")
    body = page.locator("main")
    for name in (
        "RequestByokSetup",
        "ClaimByokSetupRequest",
        "StartPreflight",
        "RunPreflight",
        "ProvisionByokApps",
        "GenerateDataKey",
    ):
        expect(body).to_contain_text(name)
