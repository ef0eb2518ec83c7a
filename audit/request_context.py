"""What an audit event records about the HTTP request that caused it.

``client_ip`` is the one answer to "which address is this client?" for the audit log's
``sourceIPAddress``, the sign-in throttle (django-axes) and every other throttle. Behind
``TRUSTED_PROXY_COUNT`` reverse proxies (each appends the address it received the request from to
``X-Forwarded-For``) the client is the Nth address from the right of that header. Everything left
of it was written by the client and is never trusted.

``current_request`` is the request being served in this thread or task, for receivers of model
signals (a staff user changed in the admin) that must name who acted.
"""

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings

#: A longer header is not a proxy chain but an attempt to make parsing expensive.
MAX_FORWARDED_FOR_CHARS = 4096

_current_request: ContextVar = ContextVar("byok_current_request", default=None)


def _address(value: str) -> str | None:
    """``value`` as a normalized IP address, or ``None`` if it is not one."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    # An IPv4 client reached over an IPv6 socket counts against the same lockout as over IPv4.
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def client_ip(request) -> str:
    if request is None:
        return ""
    remote = request.META.get("REMOTE_ADDR") or ""
    proxies = max(0, int(getattr(settings, "TRUSTED_PROXY_COUNT", 0) or 0))
    if proxies == 0:
        return _address(remote) or remote
    header = request.META.get("HTTP_X_FORWARDED_FOR") or ""
    if not header or len(header) > MAX_FORWARDED_FOR_CHARS:
        return _address(remote) or remote
    hops = header.split(",")
    if len(hops) < proxies:
        # Fewer hops than proxies: the request did not come through all of them.
        return _address(remote) or remote
    return _address(hops[-proxies]) or _address(remote) or remote


def user_agent(request) -> str:
    return (request.META.get("HTTP_USER_AGENT") or "")[:300] if request is not None else ""


def current_request():
    """The HTTP request this thread is serving, or ``None`` (shell, worker, migration)."""
    return _current_request.get()


@contextmanager
def serving(request) -> Iterator[None]:
    """Make ``request`` the ``current_request()`` while the block runs."""
    token = _current_request.set(request)
    try:
        yield
    finally:
        _current_request.reset(token)
