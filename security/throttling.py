"""The sign-in throttle (django-axes, see AXES_* in settings): how an attempt is keyed, and the
password check every other page that asks for a password goes through."""

from django.contrib.auth import authenticate

from audit.request_context import client_ip as _client_ip


def username_of(request, credentials) -> str | None:
    """The attempted e-mail address, as the user model stores it (trimmed, lower case).

    Addresses are case-insensitive at sign-in, so ``Admin@Acme`` and ``admin@acme`` must count
    against the same lockout.
    """
    value = None
    if credentials:
        value = credentials.get("username") or credentials.get("email")
    if value is None and request is not None and request.method == "POST":
        value = request.POST.get("username")
    if not isinstance(value, str):
        return None
    return value.strip().lower()[:254] or None


def client_ip(request) -> str | None:
    return _client_ip(request) or None


def password_is_right(request, *, user, password: str) -> bool:
    """Whether ``password`` is ``user``'s, checked like a sign-in: refused while that address is
    locked out, and a wrong one counts towards the lockout (and the audited failures).

    Pages that re-ask the password (revoke, restore, password change, re-authentication) use
    this instead of ``user.check_password``, which would let a locked-out attacker keep guessing.
    A lockout sets ``request.axes_locked_out``; the axes middleware then answers with the
    "sign-in locked" page (429).
    """
    checked = authenticate(request, username=user.get_username(), password=password)
    return checked is not None and checked.pk == user.pk
