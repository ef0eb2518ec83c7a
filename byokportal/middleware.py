"""Security headers: django-csp's Content-Security-Policy plus the few Django does not set.

The policy itself is ``settings.CONTENT_SECURITY_POLICY`` ('self' only). The one exception is
the Django admin: its changelist template has one inline ``<style>`` block (on changelists
without actions). Rather than ``'unsafe-inline'``, the admin's policy allows exactly that block
by its SHA-256 hash, read from the installed Django's template, so an upgrade that changes it
keeps working and nothing else inline ever runs.
"""

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

import django
from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings

from core.request_id import acceptable, new_request_id, request_id_set

ADMIN_PREFIX = "/admin/"
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


@cache
def admin_inline_style_hashes() -> tuple[str, ...]:
    """CSP source expressions for the inline ``<style>`` blocks of Django's admin templates."""
    templates = Path(django.__file__).parent / "contrib" / "admin" / "templates" / "admin"
    hashes = []
    for template in sorted(templates.rglob("*.html")):
        for block in re.findall(r"<style>(.*?)</style>", template.read_text(), flags=re.S):
            if "{%" in block or "{{" in block:
                continue  # rendered differently each time: cannot be hashed (none today)
            digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
            hashes.append(f"'sha256-{digest}'")
    return tuple(hashes)


class SecurityHeadersMiddleware(CSPMiddleware):
    """CSP (django-csp), Permissions-Policy and, in production, Cross-Origin-Opener-Policy."""

    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only=report_only)
        if request.path_info.startswith(ADMIN_PREFIX) and not report_only:
            update = dict(parts.update or {})
            update["style-src"] = [*update.get("style-src", []), *admin_inline_style_hashes()]
            parts.update = update
        return parts

    def process_response(self, request, response):
        response = super().process_response(request, response)
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        if not settings.DEBUG:
            response.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response


class RequestIdMiddleware:
    """First in the chain: the request's ID (``core.request_id``) for everything it does, and
    the ``X-Request-ID`` response header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = acceptable(request.headers.get("X-Request-ID")) or new_request_id()
        request.request_id = request_id
        with request_id_set(request_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
