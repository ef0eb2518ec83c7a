"""View decorators for destructive actions: two-factor and a recent sign-in.

Apply them *inside* the permission decorator, so outsiders still get the permission answer
(404/403) and never a detour through the two-factor pages::

    @org_admin_required
    @otp_required_for_destructive
    @recent_auth_required(max_age_s=600)
    @require_http_methods(["GET", "POST"])
    def revoke_access(request, org): ...

Both guard GET as well as POST: the person sees the page only once they may act on it. After the
detour they come back to the page (``?next=``); a POST is not replayed, it is submitted again.
"""

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login

from security import session as auth_session
from security.mfa import is_verified, redirect_to_second_factor, return_path, with_next


def otp_required_for_destructive(view: Callable) -> Callable:
    """The session must have passed a one-time code: set up an authenticator app, or verify."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_verified(user):
            messages.info(
                request,
                "This action needs two-factor authentication: enter a code from your "
                "authenticator app to continue.",
            )
            return redirect_to_second_factor(request)
        return view(request, *args, **kwargs)

    return wrapper


def recent_auth_required(view: Callable | None = None, *, max_age_s: int | None = None):
    """The last password or code check must be at most ``max_age_s`` seconds old.

    Usable bare (``@recent_auth_required``, the ``RECENT_AUTH_MAX_AGE_S`` setting) or with an
    argument (``@recent_auth_required(max_age_s=600)``).
    """

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            limit = max_age_s if max_age_s is not None else settings.RECENT_AUTH_MAX_AGE_S
            age = auth_session.seconds_since_authenticated(request)
            if age is None or age > limit:
                messages.info(request, "For your security, confirm it is you before this action.")
                return with_next("security:reauthenticate", return_path(request))
            return view(request, *args, **kwargs)

        return wrapper

    return decorate(view) if view is not None else decorate
