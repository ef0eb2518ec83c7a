"""django-axes hooks: how a sign-in attempt is keyed (see AXES_* in settings)."""

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
