"""Two-factor authentication with TOTP (django-otp): who needs it, their device, redirects.

One authenticator app per user: a confirmed ``TOTPDevice`` once set up, an unconfirmed one
while the setup page is open (its secret is shown until a code proves the app has it).
"""

from urllib.parse import urlencode

from django.conf import settings
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from security import session as auth_session

DEVICE_NAME = "Authenticator app"


def has_staff_permissions(user, *, cached: bool = True) -> bool:
    """Whether any permission reaches ``user`` through a group or directly (one query, kept on
    the user object for the request). Customers have none: only vendor staff groups grant them."""
    return user.has_any_permission(cached=cached)


def is_vendor_staff(user) -> bool:
    """Vendor staff by what they can do, not only by the ``is_staff`` flag: a representative in
    a staff group whose flag was left off still must pass two-factor."""
    if not user.is_authenticated:
        return False
    if user.is_staff or user.is_superuser:
        return True
    return user.is_active and has_staff_permissions(user)


def is_verified(user) -> bool:
    """True if this session passed a one-time code (``OTPMiddleware`` installs the check)."""
    check = getattr(user, "is_verified", None)
    return bool(user.is_authenticated and callable(check) and check())


def confirmed_device(user) -> TOTPDevice | None:
    if not user.is_authenticated:
        return None
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def pending_device(user) -> TOTPDevice:
    """The unconfirmed device being set up (created on first use, kept while the page is open)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)
    return device


def needs_second_factor(request) -> bool:
    """Vendor staff always; anyone else once they have set up an authenticator app."""
    user = request.user
    return is_vendor_staff(user) or (user.is_authenticated and auth_session.is_enrolled(request))


def complete_verification(request, device: TOTPDevice) -> None:
    """The session passed ``device``'s code: remember the device and the time; new session id."""
    otp_login(request, device)
    auth_session.mark_authenticated(request)
    auth_session.set_enrolled(request, True)
    request.session.cycle_key()  # a privilege step-up gets a fresh session id


def safe_next(request, default: str | None = None) -> str:
    """The ``next`` parameter if it points into this site; the dashboard otherwise."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default or reverse(settings.LOGIN_REDIRECT_URL)


def return_path(request) -> str:
    """Where to come back to after a detour: this page for GET, else the page the form was on."""
    if request.method in ("GET", "HEAD"):
        return request.get_full_path()
    referer = request.META.get("HTTP_REFERER", "")
    if referer and url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return referer
    return reverse(settings.LOGIN_REDIRECT_URL)


def with_next(url_name: str, next_url: str):
    return redirect(f"{reverse(url_name)}?{urlencode({'next': next_url})}")


def redirect_to_second_factor(request):
    """To the verify page if the user has an authenticator app, else to set one up."""
    target = (
        "security:two-factor-verify"
        if confirmed_device(request.user)
        else "security:two-factor-setup"
    )
    return with_next(target, return_path(request))
