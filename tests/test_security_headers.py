"""Security headers and cookies on real responses, with the production settings' values."""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from tests.factories import PASSWORD, UserFactory, org_admin
from tests.support import login_staff

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent

TRANSPORT_SETTINGS = [
    "DEBUG",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "SECURE_REDIRECT_EXEMPT",
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "CSRF_COOKIE_SECURE",
    "CSRF_COOKIE_HTTPONLY",
    "X_FRAME_OPTIONS",
    "CONTENT_SECURITY_POLICY",
]


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> dict:
    """The transport settings as production computes them (DEBUG off), read in a subprocess."""
    tmp = tmp_path_factory.mktemp("prod")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "byokportal.settings",
        "DEBUG": "0",
        "SECRET_KEY": "k" * 60,
        "ALLOWED_HOSTS": "byok.vendor.example",
        "BYOK_VAR_DIR": str(tmp),
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "AUDIT_SIGNING_KEY": base64.b64encode(b"\x01" * 32).decode(),
    }
    code = (
        "import json; from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {TRANSPORT_SETTINGS!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    values = json.loads(out.strip().splitlines()[-1])
    assert values.pop("DEBUG") is False
    return values


def directives(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())


def test_portal_pages_allow_only_their_own_origin(client):
    response = client.get("/accounts/login/")
    csp = directives(response)
    assert csp["default-src"] == "'self'"
    for name in ("script-src", "style-src", "img-src", "font-src", "connect-src", "base-uri"):
        assert csp[name] == "'self'", name
    assert csp["object-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert csp["form-action"] == "'self'"
    assert "unsafe" not in response["Content-Security-Policy"]
    assert "data:" not in response["Content-Security-Policy"]


def test_portal_pages_deny_framing_sniffing_and_cross_origin_referrers(client):
    response = client.get("/accounts/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


def test_production_sends_hsts_and_redirects_plain_http(client, production):
    with override_settings(**production):
        secure = client.get("/accounts/login/", secure=True)
        assert secure.status_code == 200
        assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
        assert secure["Cross-Origin-Opener-Policy"] == "same-origin"
        assert secure["X-Frame-Options"] == "DENY"
        plain = client.get("/accounts/login/")
        assert plain.status_code == 301 and plain["Location"].startswith("https://")
        # Load balancers probe /healthz over plain HTTP.
        assert client.get("/healthz").status_code == 200


def test_production_cookies_are_secure_and_http_only(client, production):
    user = org_admin()
    with override_settings(**production):
        client.get("/accounts/login/", secure=True)
        response = client.post(
            "/accounts/login/", {"username": user.email, "password": PASSWORD}, secure=True
        )
        assert response.status_code == 302
        for name in ("sessionid", "csrftoken"):
            cookie = response.cookies[name]
            assert cookie["secure"] is True, name
            assert cookie["httponly"] is True, name
            assert cookie["samesite"] == "Lax", name


def test_error_and_lockout_pages_carry_the_policy_too(client, production):
    with override_settings(**production):
        missing = client.get("/orgs/999999/", secure=True)
        assert missing.status_code in (302, 404)
        assert "default-src 'self'" in missing["Content-Security-Policy"]
        user = org_admin()
        for _ in range(5):
            locked = client.post(
                "/accounts/login/", {"username": user.email, "password": "x"}, secure=True
            )
        assert locked.status_code == 429
        assert "default-src 'self'" in locked["Content-Security-Policy"]


def test_the_admin_allows_only_its_known_inline_style_by_hash(client, monkeypatch):
    from django.contrib import admin
    from django_otp.plugins.otp_totp.models import TOTPDevice

    login_staff(client, UserFactory(is_staff=True, is_superuser=True))
    # A changelist with its action bars switched off has Django's one inline <style> block.
    model_admin = admin.site._registry[TOTPDevice]
    monkeypatch.setattr(model_admin, "actions_on_top", False)
    monkeypatch.setattr(model_admin, "actions_on_bottom", False)
    response = client.get("/admin/otp_totp/totpdevice/")
    body = response.content.decode()
    blocks = re.findall(r"<style>(.*?)</style>", body, flags=re.S)
    assert blocks, "expected the admin's inline style on a changelist without actions"
    style_src = directives(response)["style-src"]
    assert "unsafe-inline" not in style_src
    for block in blocks:
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in style_src
    assert directives(response)["script-src"] == "'self'"
