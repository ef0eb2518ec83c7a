"""Two-factor for every page of vendor staff (and of anyone who has set up an authenticator).

An authenticated user who needs a second factor and whose session has not passed one is sent to
set up an authenticator app or to enter a code, then back. Exempt: the two-factor pages
themselves (and re-authentication, which set-up may ask for first), log-out, static files,
/healthz and the public audit trust endpoints. The Django admin is not exempt (and its site
also refuses unverified sessions by itself).

``CurrentRequestMiddleware`` (right after authentication) makes the request being served known
to model-signal receivers: the audit of staff changes names who made them.
"""

from functools import cached_property

from django.conf import settings
from django.urls import NoReverseMatch, reverse

from audit.request_context import serving
from security.mfa import is_verified, needs_second_factor, redirect_to_second_factor

EXEMPT_URL_NAMES = (
    "security:two-factor-setup",
    "security:two-factor-verify",
    "security:reauthenticate",  # set-up asks for the password first when the sign-in is not recent
    "logout",
    "admin:logout",
    "healthz",
    "metrics",  # the scraper's bearer token is its credential, not a session
    "audit:public-key",
    "audit:verifier",
)


class TwoFactorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    @cached_property
    def exempt_paths(self) -> tuple[str, ...]:
        paths = []
        for name in EXEMPT_URL_NAMES:
            try:
                paths.append(reverse(name))
            except NoReverseMatch:
                continue
        return tuple(paths)

    @cached_property
    def exempt_prefixes(self) -> tuple[str, ...]:
        static = "/" + settings.STATIC_URL.lstrip("/")
        return (static,)

    def is_exempt(self, path: str) -> bool:
        return path in self.exempt_paths or path.startswith(self.exempt_prefixes)

    def __call__(self, request):
        user = request.user
        if (
            user.is_authenticated
            and needs_second_factor(request)
            and not is_verified(user)
            and not self.is_exempt(request.path)
        ):
            return redirect_to_second_factor(request)
        return self.get_response(request)


class CurrentRequestMiddleware:
    """Makes the request ``audit.request_context.current_request()`` while it is served, so the
    audit of staff changes made through model signals names who acted (``staff_audit``)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with serving(request):
            return self.get_response(request)
