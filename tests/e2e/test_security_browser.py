"""The sign-in hardening in a real browser: headers, two-factor enrolment, lockout, recent auth."""

import base64
import re

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django_otp.oath import TOTP
from playwright.sync_api import expect

from connections.models import ByokConnection, RegionalKey
from orgs.staff_roles import ACCOUNT_REPS
from security import session as auth_session
from tests.factories import PASSWORD, OrganizationFactory, org_admin, staff_user
from tests.support import fresh_totp_code, totp_device

pytestmark = pytest.mark.django_db(transaction=True)


def csp_violations(page) -> list[str]:
    messages: list[str] = []
    page.on(
        "console",
        lambda msg: (
            messages.append(msg.text)
            if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text
            else None
        ),
    )
    return messages


def test_real_responses_carry_the_security_headers(page):
    response = page.goto("/accounts/login/")
    headers = response.headers
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert "camera=()" in headers["permissions-policy"]
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["csrftoken"]["httpOnly"] is True


def test_staff_enrol_two_factor_then_reach_the_staff_pages(page, login):
    rep = staff_user(ACCOUNT_REPS)
    violations = csp_violations(page)
    login(page, rep.email, PASSWORD, otp=False)

    # Sent to set up an authenticator before any page: the QR code and the key are shown.
    expect(page).to_have_url(re.compile(r"/accounts/2fa/setup/"))
    expect(page.get_by_role("heading", name="Set up two-factor authentication")).to_be_visible()
    expect(page.locator(".qr-code svg")).to_be_visible()
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    page.goto("/staff/requests/")  # still held at the set-up page
    expect(page).to_have_url(re.compile(r"/accounts/2fa/setup/\?next=%2Fstaff%2Frequests%2F"))

    # The authenticator app: RFC 6238 over the key typed in by hand.
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    code = f"{TOTP(key).token():06d}"
    page.get_by_label("Code from your authenticator app").fill(code)
    page.get_by_role("button", name="Turn on two-factor authentication").click()

    expect(page).to_have_url(re.compile(r"/staff/requests/$"))
    expect(page.locator(".messages")).to_contain_text("Two-factor authentication is on")
    page.goto("/admin/")
    expect(page.get_by_role("heading", name="Support look-ups")).to_be_visible()
    page.goto("/admin/connections/byokconnection/")
    expect(page.locator("#changelist")).to_be_visible()
    assert violations == [], violations  # the admin works under the strict policy


def test_repeated_wrong_passwords_lock_the_account_with_a_clear_message(page):
    user = org_admin()
    for attempt in range(5):
        page.goto("/accounts/login/")
        page.get_by_label("E-mail address", exact=True).fill(user.email)
        page.get_by_label("Password", exact=True).fill(f"wrong-password-{attempt}")
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.get_by_role("button", name="Log in").click()
    assert answer.value.status == 429
    expect(page.get_by_role("heading", name="Sign-in locked for 15 minutes")).to_be_visible()
    expect(page.locator("main")).to_contain_text("5 failed sign-in attempts")

    # The right password does not get in while the lock lasts.
    page.goto("/accounts/login/")
    page.get_by_label("E-mail address", exact=True).fill(user.email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Sign-in locked for 15 minutes")).to_be_visible()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))


def test_a_stale_sign_in_must_be_confirmed_before_the_revoke_page(page, login):
    org = OrganizationFactory(name="Stale Corp")
    admin = org_admin(org)
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id="565656565656", location="us", state="active"
    )
    RegionalKey.objects.create(
        connection=connection,
        region="us-east-1",
        key_arn="arn:aws:kms:us-east-1:565656565656:key/stale",
        status="enabled",
    )
    login(page, admin.email, PASSWORD, otp=True)
    page.goto(f"/orgs/{org.pk}/byok/revoke/")
    expect(page.get_by_role("heading", name="Revoke key access")).to_be_visible()

    # An hour later (the session's last sign-in is moved back), the page asks again.
    cookie = next(c for c in page.context.cookies() if c["name"] == "sessionid")
    session = SessionStore(session_key=cookie["value"])
    session[auth_session.LAST_AUTH_KEY] = auth_session.now_s() - 3600
    session.save()
    page.goto(f"/orgs/{org.pk}/byok/revoke/")
    expect(page).to_have_url(re.compile(r"/accounts/reauthenticate/\?next="))
    expect(page.get_by_role("heading", name="Confirm it is you")).to_be_visible()
    page.get_by_label("Your password").fill(PASSWORD)
    page.get_by_label("Code from your authenticator app").fill(fresh_totp_code(totp_device(admin)))
    page.get_by_role("button", name="Continue").click()

    expect(page).to_have_url(re.compile(rf"/orgs/{org.pk}/byok/revoke/$"))
    expect(page.get_by_role("heading", name="Revoke key access")).to_be_visible()
    expect(page.get_by_role("button", name="Revoke access now")).to_be_visible()
