"""What the session remembers about how (and how recently) its user proved who they are.

- ``LAST_AUTH_KEY``: Unix time of the last password or one-time-code check (sign-in, two-factor
  verification, re-authentication). Destructive actions want it recent.
- ``ENROLLED_KEY``: the user has a confirmed two-factor device, so every session of theirs must
  be verified (cached at sign-in so the middleware needs no query per request).
- The verified device itself is django-otp's ``DEVICE_ID_SESSION_KEY``.
"""

from django.utils import timezone

LAST_AUTH_KEY = "security_last_auth"
ENROLLED_KEY = "security_mfa_enrolled"


def now_s() -> float:
    # timezone.now(), not time.time(): tests freeze the clock with freezegun.
    return timezone.now().timestamp()


def mark_authenticated(request) -> None:
    """Record that the user proved a factor just now."""
    request.session[LAST_AUTH_KEY] = now_s()


def seconds_since_authenticated(request) -> float | None:
    """How long ago the last factor check was, or ``None`` if this session never had one."""
    value = request.session.get(LAST_AUTH_KEY)
    if not isinstance(value, int | float):
        return None
    return max(0.0, now_s() - float(value))


def set_enrolled(request, enrolled: bool) -> None:
    request.session[ENROLLED_KEY] = bool(enrolled)


def is_enrolled(request) -> bool:
    return bool(request.session.get(ENROLLED_KEY))
