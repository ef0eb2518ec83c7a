"""Test helpers for signed-in sessions under the portal's sign-in hardening.

Vendor staff must pass two-factor on every page (``security.middleware``), and destructive
customer actions want two-factor and a recent sign-in (``security.decorators``). These helpers
give a test client such a session without going through the pages:

- ``login_staff(client, user)``: ``force_login`` plus a verified two-factor session.
- ``login_verified(client, user)``: the same for anyone (an org admin before a revoke).
- ``verify_session(client, user)``: mark an already signed-in client as verified.
- ``make_auth_stale(client, seconds)``: pretend the last sign-in was that long ago.
- ``totp_device(user)`` / ``totp_code(device)``: a confirmed authenticator and its current code.
"""

from __future__ import annotations

import time

from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from security import session as auth_session


def totp_device(user, *, confirmed: bool = True) -> TOTPDevice:
    """The user's confirmed authenticator, created if missing."""
    device = TOTPDevice.objects.filter(user=user, confirmed=confirmed).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(
            user=user, name="Test authenticator", confirmed=confirmed
        )
    return device


def totp_code(device: TOTPDevice, *, at: float | None = None) -> str:
    """The code the user's app shows at ``at`` (Unix time; now by default)."""
    generator = TOTP(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
    generator.time = time.time() if at is None else at
    return f"{generator.token():0{device.digits}d}"


def fresh_totp_code(device: TOTPDevice) -> str:
    """The current code, after making the device forget the last code used and any throttling.

    django-otp accepts a time step's code once: a test that signs the same person in twice
    within 30 seconds would otherwise be refused (as a real replay should be).
    """
    TOTPDevice.objects.filter(pk=device.pk).update(
        last_t=-1, drift=0, throttling_failure_count=0, throttling_failure_timestamp=None
    )
    device.refresh_from_db()
    return totp_code(device)


def verify_session(client, user) -> TOTPDevice:
    """Mark the client's session as having passed a one-time code just now."""
    device = totp_device(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session[auth_session.LAST_AUTH_KEY] = auth_session.now_s()
    session[auth_session.ENROLLED_KEY] = True
    session.save()
    return device


def login_verified(client, user):
    client.force_login(user)
    verify_session(client, user)
    return client


def login_staff(client, user):
    """Sign a vendor staff member in with a verified two-factor session."""
    assert user.is_staff or user.is_superuser, f"{user} is not vendor staff"
    return login_verified(client, user)


def make_auth_stale(client, seconds: float) -> None:
    """Pretend the session's last password or code check was ``seconds`` ago."""
    session = client.session
    session[auth_session.LAST_AUTH_KEY] = auth_session.now_s() - seconds
    session.save()
