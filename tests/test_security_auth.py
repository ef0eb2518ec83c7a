"""Sign-in hardening: throttling, two-factor for staff and before destructive actions, recent
authentication. Headers are in test_security_headers.py, the browser walk-through in
tests/e2e/test_security_browser.py."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.test import Client
from django.urls import include, path, reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from freezegun import freeze_time

from audit.models import AuditEvent
from orgs.staff_roles import ACCOUNT_REPS
from security.decorators import otp_required_for_destructive, recent_auth_required
from security.tasks import report_closed_failure_windows
from tests.factories import PASSWORD, OrganizationFactory, org_admin, staff_user
from tests.support import (
    login_staff,
    login_verified,
    make_auth_stale,
    totp_code,
    totp_device,
)

pytestmark = pytest.mark.django_db


# A destructive test view, decorated as connections.views.revoke_access is.
@login_required
@otp_required_for_destructive
@recent_auth_required(max_age_s=600)
def destructive_view(request):
    return HttpResponse(f"done by {request.user.email}")


urlpatterns = [
    path("_test/destructive/", destructive_view, name="test-destructive"),
    path("", include("byokportal.urls")),
]
use_test_urls = pytest.mark.urls(__name__)


def sign_in(client, email, password=PASSWORD, **extra):
    return client.post(
        reverse("login"), {"username": email, "password": password}, REMOTE_ADDR="10.0.0.1", **extra
    )


# --- Throttling (django-axes) -----------------------------------------------------------


def test_five_wrong_passwords_lock_the_account_with_a_clear_page(client):
    user = org_admin()
    for _ in range(4):
        assert sign_in(client, user.email, "wrong-password").status_code == 200
    locked = sign_in(client, user.email, "wrong-password")
    assert locked.status_code == 429
    body = locked.content.decode()
    assert "Sign-in locked for 15 minutes" in body and "5 failed sign-in attempts" in body
    # The right password is refused too while the lock lasts, with the same page.
    assert sign_in(client, user.email).status_code == 429
    assert "_auth_user_id" not in client.session


def test_failed_sign_ins_and_the_lockout_are_audited(client, settings):
    # Counted per address and window (tests/security/test_failed_sign_in_events.py): the first
    # failure at once, the rest with the lockout when the window closes.
    settings.SIGN_IN_FAILURE_WINDOW_S = 300
    user = org_admin()
    start = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    with freeze_time(start):
        for _ in range(5):
            sign_in(client, user.email, "wrong-password")
    with freeze_time(start + timedelta(minutes=6)):
        report_closed_failure_windows()
    failures = AuditEvent.objects.filter(event_name="ConsoleLogin", error_code__gt="")
    first, rest = failures.order_by("sequence")
    assert first.error_code == "Failed authentication"
    assert rest.error_code == "AccountLocked"
    assert rest.record["requestParameters"]["failureCount"] == 4
    assert rest.record["requestParameters"]["lockedOutCount"] == 1
    assert all(e.organization_id == user.organizations.get().pk for e in failures)


def test_the_lock_is_per_address_and_ip_and_ignores_case(client):
    user = org_admin()
    for _ in range(5):
        sign_in(client, user.email.upper(), "wrong-password")
    assert sign_in(client, user.email).status_code == 429
    # The same person from another network is not locked out (nor is anyone else).
    other_ip = Client().post(
        reverse("login"),
        {"username": user.email, "password": PASSWORD},
        REMOTE_ADDR="10.0.0.2",
    )
    assert other_ip.status_code == 302


def test_the_lock_ends_after_the_cool_off(client):
    user = org_admin()
    for _ in range(5):
        sign_in(client, user.email, "wrong-password")
    with freeze_time(timezone.now() + timedelta(minutes=16)):
        assert sign_in(client, user.email).status_code == 302


# --- Two-factor for vendor staff ---------------------------------------------------------


def test_staff_without_an_authenticator_are_sent_to_set_one_up(client):
    client.force_login(staff_user(ACCOUNT_REPS))
    response = client.get("/staff/requests/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/2fa/setup/?next=%2Fstaff%2Frequests%2F"


def test_staff_with_an_authenticator_must_enter_a_code_on_every_page(client):
    rep = staff_user(ACCOUNT_REPS)
    totp_device(rep)
    client.force_login(rep)
    for url in ("/", "/staff/requests/", "/admin/", "/accounts/password/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/2fa/verify/?next="), url


@pytest.mark.parametrize("url", ["/healthz", "/static/css/portal.css", "/accounts/2fa/setup/"])
def test_two_factor_pages_health_and_static_are_reachable_before_verifying(client, url):
    client.force_login(staff_user(ACCOUNT_REPS))
    assert client.get(url).status_code in (200, 404)  # 404: static files not collected here


def test_staff_set_up_an_authenticator_and_reach_the_staff_pages(client):
    rep = staff_user(ACCOUNT_REPS)
    client.force_login(rep)
    page = client.get("/accounts/2fa/setup/?next=/staff/requests/")
    body = page.content.decode()
    assert page.status_code == 200
    assert "<svg" in body and 'class="segno"' in body  # the QR code, inline
    device = TOTPDevice.objects.get(user=rep, confirmed=False)
    assert page.context["secret"].replace(" ", "") in body.replace(" ", "")
    wrong = client.post("/accounts/2fa/setup/", {"code": "000000", "next": "/staff/requests/"})
    assert "That code is not right" in wrong.content.decode()
    device.refresh_from_db()
    with freeze_time(timezone.now() + timedelta(seconds=2)):  # past the wrong code's wait
        done = client.post(
            "/accounts/2fa/setup/", {"code": totp_code(device), "next": "/staff/requests/"}
        )
        assert done.status_code == 302 and done["Location"] == "/staff/requests/"
        assert client.get("/staff/requests/").status_code == 200
    assert TOTPDevice.objects.get(user=rep).confirmed
    assert AuditEvent.objects.filter(event_name="EnableMFADevice", principal=rep.email).exists()


def test_a_code_verifies_once_and_wrong_codes_are_throttled(client):
    rep = staff_user(ACCOUNT_REPS)
    device = totp_device(rep)
    client.force_login(rep)
    code = totp_code(device)
    ok = client.post("/accounts/2fa/verify/", {"code": code, "next": "/staff/requests/"})
    assert ok.status_code == 302 and ok["Location"] == "/staff/requests/"
    # Replaying the same code in a new session is refused.
    replay = Client()
    replay.force_login(rep)
    refused = replay.post("/accounts/2fa/verify/", {"code": code})
    assert refused.status_code == 200
    assert "not right" in refused.content.decode()
    again = replay.post("/accounts/2fa/verify/", {"code": "123456"})
    assert "Too many wrong codes" in again.content.decode()
    # Both failures are audited: the first at once, the second counted until its window closes.
    with freeze_time(timezone.now() + timedelta(days=1)):
        report_closed_failure_windows()
    failed = AuditEvent.objects.filter(event_name="CheckMfa", error_code__gt="")
    assert sum(e.record["requestParameters"]["failureCount"] for e in failed) == 2


def test_an_org_admin_who_set_up_an_authenticator_verifies_at_each_sign_in(client):
    user = org_admin()
    totp_device(user)
    assert sign_in(client, user.email).status_code == 302
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/verify/")


def test_setting_up_an_authenticator_long_after_sign_in_asks_for_the_password(client):
    user = org_admin()
    client.force_login(user)
    make_auth_stale(client, 3600)
    response = client.get("/accounts/2fa/setup/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/reauthenticate/?next=")
    assert not TOTPDevice.objects.filter(user=user).exists()


def test_staff_returning_late_to_set_up_confirm_their_password_first(client):
    rep = staff_user(ACCOUNT_REPS)
    client.force_login(rep)
    make_auth_stale(client, 3600)
    to_setup = client.get("/staff/requests/")
    to_reauth = client.get(to_setup["Location"])
    assert to_reauth["Location"].startswith("/accounts/reauthenticate/?next=")
    assert client.get(to_reauth["Location"]).status_code == 200  # not sent round in circles
    back = client.post(to_reauth["Location"], {"password": PASSWORD})
    assert back["Location"].startswith("/accounts/2fa/setup/")
    assert client.get(back["Location"]).status_code == 200


# --- Destructive actions: two-factor and a recent sign-in --------------------------------


@use_test_urls
def test_destructive_action_without_an_authenticator_leads_to_setup_then_back(client):
    user = org_admin()
    client.force_login(user)
    response = client.get("/_test/destructive/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/2fa/setup/?next=%2F_test%2Fdestructive%2F"
    client.get(response["Location"])
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    back = client.post(
        "/accounts/2fa/setup/", {"code": totp_code(device), "next": "/_test/destructive/"}
    )
    assert back["Location"] == "/_test/destructive/"
    assert client.get("/_test/destructive/").content.decode() == f"done by {user.email}"


@use_test_urls
def test_destructive_action_with_an_unverified_session_asks_for_a_code(client):
    user = org_admin()
    totp_device(user)
    client.force_login(user)
    # An enrolled user is already held at the verify page by the middleware; either way the
    # action is not reached without a code.
    response = client.post("/_test/destructive/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/verify/")


@use_test_urls
def test_destructive_action_after_a_stale_sign_in_asks_to_reauthenticate(client):
    user = org_admin()
    device = totp_device(user)
    login_verified(client, user)
    assert client.get("/_test/destructive/").status_code == 200
    make_auth_stale(client, 601)
    response = client.get("/_test/destructive/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/reauthenticate/?next=%2F_test%2Fdestructive%2F"
    page = client.get(response["Location"]).content.decode()
    assert "Your password" in page and "authenticator app" in page
    wrong = client.post(
        "/accounts/reauthenticate/",
        {"password": "nope", "code": totp_code(device), "next": "/_test/destructive/"},
    )
    assert "That is not your password" in wrong.content.decode()
    ok = client.post(
        "/accounts/reauthenticate/",
        {"password": PASSWORD, "code": totp_code(device), "next": "/_test/destructive/"},
    )
    assert ok.status_code == 302 and ok["Location"] == "/_test/destructive/"
    assert client.get("/_test/destructive/").status_code == 200


@use_test_urls
def test_reauthentication_never_redirects_off_site(client):
    user = org_admin()
    client.force_login(user)
    response = client.post(
        "/accounts/reauthenticate/", {"password": PASSWORD, "next": "https://evil.example/"}
    )
    assert response.status_code == 302 and response["Location"] == "/"


@use_test_urls
def test_wrong_reauthentication_passwords_are_throttled_like_sign_ins(client):
    user = org_admin()
    client.force_login(user)
    statuses = [
        client.post(
            "/accounts/reauthenticate/", {"password": "nope"}, REMOTE_ADDR="10.0.0.9"
        ).status_code
        for _ in range(5)
    ]
    assert statuses[-1] == 429


def test_verified_staff_reach_their_pages(client):
    login_staff(client, staff_user(ACCOUNT_REPS))
    assert client.get("/staff/requests/").status_code == 200
    assert client.get("/admin/").status_code == 200


def test_session_expiry_and_password_rules_are_set(settings):
    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE is True
    assert settings.SESSION_COOKIE_AGE <= 8 * 3600
    names = [v["NAME"].rsplit(".", 1)[-1] for v in settings.AUTH_PASSWORD_VALIDATORS]
    assert names == [
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    ]


def test_a_weak_new_password_is_refused(client):
    user = org_admin(OrganizationFactory(name="Pw Org"))
    client.force_login(user)
    response = client.post(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": "password1", "new_password2": "password1"},
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "too short" in body and "too common" in body
