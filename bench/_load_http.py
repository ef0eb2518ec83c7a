"""HTTP helpers of ``bench load``: signing people in as a browser would (password, then a
one-time code from their authenticator app), and the revoke form with its step-up.

Pure helpers (:func:`totp`, :func:`hidden_inputs`) are unit-tested in
``tests/bench/test_load_helpers.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import time
from urllib.parse import urljoin

_INPUT = re.compile(r"<input\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r'(\w+)="([^"]*)"')


def totp(key_hex: str, *, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    """The RFC 6238 code of a django-otp TOTP device's hex key (SHA-1, 30 s, 6 digits)."""
    counter = int((time.time() if at is None else at) // step)
    digest = hmac.new(bytes.fromhex(key_hex), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def hidden_inputs(html: str) -> dict[str, str]:
    """``name → value`` of the page's hidden inputs (the CSRF token, ``next``)."""
    fields = {}
    for tag in _INPUT.findall(html):
        attrs = dict(_ATTR.findall(tag))
        if attrs.get("type", "").lower() == "hidden" and "name" in attrs:
            fields[attrs["name"]] = attrs.get("value", "")
    return fields


class SignInFailed(RuntimeError):
    pass


def sign_in(base_url: str, email: str, password: str, totp_key: str | None = None):
    """A ``requests.Session`` signed in as ``email`` through the sign-in pages (and the
    two-factor page when the portal asks for a code)."""
    import requests

    session = requests.Session()
    login = f"{base_url}/accounts/login/"
    page = session.get(login, timeout=30)
    form = hidden_inputs(page.text)
    answer = session.post(
        login,
        data={**form, "username": email, "password": password},
        headers={"Referer": login},
        timeout=60,
    )
    if "/2fa/" in answer.url:
        if totp_key is None:
            raise SignInFailed(f"{email}: the portal asks for a one-time code")
        form = hidden_inputs(answer.text)
        answer = session.post(
            answer.url,
            data={**form, "code": totp(totp_key)},
            headers={"Referer": answer.url},
            timeout=60,
        )
    if answer.status_code != 200 or "/accounts/" in answer.url:
        raise SignInFailed(f"{email}: sign-in ended at {answer.url} ({answer.status_code})")
    return session


def revoke(base_url: str, session, *, org_id: int, org_name: str, password: str) -> float:
    """Revoke the org's key access through its revoke page (the step-up form); returns the
    time the POST was sent (``time.time()``)."""
    url = f"{base_url}/orgs/{org_id}/byok/revoke/"
    page = session.get(url, timeout=30)
    if page.status_code != 200 or "confirm_name" not in page.text:
        raise SignInFailed(f"the revoke page answered {page.status_code} at {page.url}")
    form = hidden_inputs(page.text)
    data = {
        **form,
        "reason": "bench load: incident drill",
        "confirm_name": org_name,
        "password": password,
    }
    sent = time.time()
    answer = session.post(url, data=data, headers={"Referer": url}, timeout=60)
    if answer.status_code != 200 or urljoin(url, answer.url) != url:
        raise SignInFailed(f"the revoke POST ended at {answer.url} ({answer.status_code})")
    return sent
