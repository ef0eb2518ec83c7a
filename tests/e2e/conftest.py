"""Browser lane: Playwright (sync API) driving Debian's Chromium against pytest-django's
``live_server``, on SQLite with transactional tests, eager Celery and a moto server.

Run it with ``make test-browser``. A failing test leaves a screenshot in test-results/e2e/.
"""

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; Django would refuse ORM calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-results" / "e2e"
DEFAULT_TIMEOUT_MS = 10_000


@pytest.fixture(scope="session", autouse=True)
def _aws_endpoint(moto_server):
    """The portal in the live server talks to the session's moto server over HTTP."""
    return moto_server


@pytest.fixture(scope="session")
def playwright() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright) -> Iterator:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: `make test-browser` installs Debian's chromium")
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def page(request, browser, live_server) -> Iterator:
    """A fresh browser context and page; relative URLs (``page.goto("/")``) hit the live server."""
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    yield page
    failed = any(
        getattr(request.node, f"rep_{when}", None) is not None
        and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )
    if failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception as exc:  # a screenshot must not hide the real failure
            print(f"screenshot failed: {exc}")
    context.close()


@pytest.fixture
def login(settings) -> Callable:
    """``login(page, email, password=DEMO_PASSWORD, *, otp=None)``: sign in through the form.

    Two-factor: vendor staff always pass it (``otp`` defaults to True for them): the fixture
    gives the user an authenticator if they have none and types its current code on the verify
    page. ``otp=True`` does the same for a customer (needed before revoke or re-encryption);
    ``otp=False`` stops after the password, wherever the portal sends the user (e.g. to set up
    an authenticator: tests/e2e/test_security_browser.py walks that page itself).
    """
    from django.contrib.auth import get_user_model

    from tests.support import fresh_totp_code, totp_device

    def _login(page, email: str, password: str | None = None, *, otp: bool | None = None) -> None:
        user = get_user_model().objects.filter(email__iexact=email).first()
        if otp is None:
            otp = bool(user is not None and (user.is_staff or user.is_superuser))
        device = totp_device(user) if otp and user is not None else None
        page.goto("/accounts/login/")
        page.get_by_label("E-mail address", exact=True).fill(email)
        page.get_by_label("Password", exact=True).fill(password or settings.DEMO_PASSWORD)
        with page.expect_navigation():
            page.get_by_role("button", name="Log in").click()
        if "/accounts/login/" in page.url:
            pytest.fail(f"login as {email} failed: still on {page.url}")
        if device is None:
            return
        if "/accounts/2fa/verify/" not in page.url:
            pytest.fail(f"login as {email}: expected the two-factor step, got {page.url}")
        page.get_by_label("Code from your authenticator app").fill(fresh_totp_code(device))
        with page.expect_navigation():
            page.get_by_role("button", name="Verify").click()
        if "/accounts/2fa/" in page.url:
            pytest.fail(f"two-factor step for {email} failed: still on {page.url}")

    return _login
