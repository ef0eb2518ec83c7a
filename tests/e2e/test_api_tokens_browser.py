"""An org admin creates an API token in the browser, copies it once, and it works."""

import re

import pytest
from django.test import Client
from playwright.sync_api import expect

from api.models import ApiToken
from demo.seed import seed_demo_world
from orgs.models import Organization

pytestmark = pytest.mark.django_db(transaction=True)


def test_admin_creates_a_token_from_the_org_page_and_it_lists_audit_events(page, login):
    seed_demo_world()
    acme = Organization.objects.get(name="Acme Corp")
    login(page, "admin@acme.example", otp=True)
    page.goto(f"/orgs/{acme.pk}/")
    page.get_by_role("link", name="API tokens").click()
    expect(page).to_have_url(re.compile(rf"/orgs/{acme.pk}/api-tokens/$"))
    page.get_by_label("Name").fill("SIEM pull")
    page.get_by_role("checkbox", name=re.compile(r"audit:read")).check()
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token")).to_contain_text("shown only once")
    whole = page.locator("#new-token-value").inner_text().strip()
    assert whole.startswith("byok_")
    expect(page.locator("#api-tokens")).to_contain_text("SIEM pull")

    answer = Client().get(
        f"/api/v1/orgs/{acme.pk}/audit/events", HTTP_AUTHORIZATION=f"Bearer {whole}"
    )
    assert answer.status_code == 200
    assert ApiToken.objects.get().scopes == ["audit:read"]

    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("#api-tokens")).to_contain_text("Revoked")
    assert (
        Client()
        .get(f"/api/v1/orgs/{acme.pk}/audit/events", HTTP_AUTHORIZATION=f"Bearer {whole}")
        .status_code
        == 401
    )


def test_api_docs_render_under_the_portals_csp(page):
    """Swagger UI from the portal's own static files: no CDN, no CSP violation."""
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
    page.goto("/api/v1/docs/")
    expect(page.locator(".swagger-ui .title")).to_contain_text("BYOK Portal API")
    expect(page.locator(".swagger-ui")).to_contain_text("/api/v1/orgs/{org_id}/byok/revoke")
    assert not problems, problems
