"""Pages: set up an authenticator app, enter a code, confirm it is you, change the password,
and "account locked"."""

import base64

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods
from django_otp.plugins.otp_totp.models import TOTPDevice

from security import failed_sign_ins, mfa
from security import session as auth_session
from security.audit import record_account_event
from security.forms import OneTimeCodeForm, ReauthenticateForm, ThrottledPasswordChangeForm
from security.qr import qr_svg


def _grouped_secret(device: TOTPDevice) -> str:
    """The secret in base32, in groups of four, for typing into an app by hand."""
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def two_factor_setup(request):
    user = request.user
    next_url = mfa.safe_next(request)
    if mfa.confirmed_device(user) is not None:
        if mfa.is_verified(user):
            return render(request, "security/two_factor_enabled.html", {"next": next_url})
        return mfa.with_next("security:two-factor-verify", next_url)
    # Adding a second factor needs the password again if the sign-in is not recent: a stolen
    # session alone must not be enough to bind an attacker's authenticator to the account.
    age = auth_session.seconds_since_authenticated(request)
    if age is None or age > settings.RECENT_AUTH_MAX_AGE_S:
        return mfa.with_next("security:reauthenticate", request.get_full_path())

    device = mfa.pending_device(user)
    form = OneTimeCodeForm(request.POST or None, device=device)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            TOTPDevice.objects.filter(user=user, confirmed=False).delete()
            if not mfa.is_vendor_staff(user):  # staff: security.staff_audit, vendor chain
                record_account_event(
                    event_name="EnableMFADevice",
                    user=user,
                    request=request,
                    parameters={"deviceName": device.name, "type": "TOTP"},
                )
        mfa.complete_verification(request, device)
        messages.success(request, "Two-factor authentication is on. Keep your app at hand.")
        return redirect(next_url)
    return render(
        request,
        "security/two_factor_setup.html",
        {
            "form": form,
            "next": next_url,
            "qr_svg": qr_svg(device.config_url),
            "secret": _grouped_secret(device),
            "issuer": settings.OTP_TOTP_ISSUER,
        },
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def two_factor_verify(request):
    user = request.user
    next_url = mfa.safe_next(request)
    device = mfa.confirmed_device(user)
    if device is None:
        return mfa.with_next("security:two-factor-setup", next_url)
    if mfa.is_verified(user):
        return redirect(next_url)
    form = OneTimeCodeForm(request.POST or None, device=device)
    if request.method == "POST":
        if form.is_valid():
            with transaction.atomic():
                record_account_event(event_name="CheckMfa", user=user, request=request)
            mfa.complete_verification(request, device)
            return redirect(next_url)
        failed_sign_ins.record_failure(
            event_name=failed_sign_ins.ONE_TIME_CODE, username=user.email, request=request
        )
    return render(request, "security/two_factor_verify.html", {"form": form, "next": next_url})


@never_cache
@sensitive_post_parameters("password", "code")
@login_required
@require_http_methods(["GET", "POST"])
def reauthenticate(request):
    """Confirm it is you: the password (and a code with an authenticator app), then back."""
    user = request.user
    next_url = mfa.safe_next(request)
    device = mfa.confirmed_device(user)
    form = ReauthenticateForm(request.POST or None, request=request, device=device)
    if request.method == "POST":
        if form.is_valid():
            record_account_event(event_name="Reauthenticate", user=user, request=request)
            if device is not None:
                mfa.complete_verification(request, device)
            else:
                auth_session.mark_authenticated(request)
                request.session.cycle_key()
            return redirect(next_url)
        if form.code_failed:  # a wrong password is counted by the sign-in throttle itself
            failed_sign_ins.record_failure(
                event_name=failed_sign_ins.ONE_TIME_CODE, username=user.email, request=request
            )
    return render(
        request,
        "security/reauthenticate.html",
        {"form": form, "next": next_url, "has_device": device is not None},
        status=200,
    )


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' lockout answer (``AXES_LOCKOUT_CALLABLE``): a page, status 429."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return render(
        request,
        "security/locked_out.html",
        {"cooloff_minutes": minutes, "failure_limit": settings.AXES_FAILURE_LIMIT},
        status=429,
    )


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change (its dispatch hides every POST field from error reports), with
    the current password checked through the sign-in throttle."""

    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "request": self.request}
