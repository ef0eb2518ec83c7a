"""Forms of the two-factor and re-authentication pages."""

import re
from datetime import datetime

from django import forms
from django.contrib.auth.forms import PasswordChangeForm
from django.utils import timezone

from security.throttling import password_is_right

CODE_RE = re.compile(r"^[0-9]{6,8}$")


def _code_field() -> forms.CharField:
    return forms.CharField(
        label="Code from your authenticator app",
        max_length=20,
        strip=True,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "spellcheck": "false",
                "autocapitalize": "off",
            }
        ),
        error_messages={"required": "Enter the 6-digit code your authenticator app shows."},
    )


def check_code(device, raw: str) -> None:
    """Raise ``ValidationError`` unless ``raw`` is the device's current code (and not throttled).

    Wrong codes make the device wait longer before the next try (django-otp's throttling).
    """
    code = re.sub(r"[\s-]", "", raw or "")
    if not CODE_RE.match(code):
        raise forms.ValidationError("Enter the 6-digit code your authenticator app shows.")
    allowed, data = device.verify_is_allowed()
    if not allowed:
        raise forms.ValidationError(_throttled_message(data or {}))
    if not device.verify_token(code):
        raise forms.ValidationError(
            "That code is not right. Codes change every 30 seconds: enter the current one. "
            "A code can be used only once."
        )


def _throttled_message(data: dict) -> str:
    until = data.get("locked_until")
    if isinstance(until, datetime):
        seconds = max(1, int((until - timezone.now()).total_seconds()) + 1)
        return f"Too many wrong codes. Wait {seconds} seconds, then enter a new code."
    return "Too many wrong codes. Wait a little, then enter a new code."


class OneTimeCodeForm(forms.Form):
    """A code from the user's authenticator app, checked against one device."""

    code = _code_field()

    def __init__(self, *args, device, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = device

    def clean_code(self) -> str:
        check_code(self.device, self.cleaned_data["code"])
        return self.cleaned_data["code"]


class ReauthenticateForm(forms.Form):
    """The password again (through ``authenticate``, so it is throttled like a sign-in), and a
    code when the user has an authenticator app."""

    password = forms.CharField(
        label="Your password",
        strip=False,
        max_length=4096,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, *args, request, device=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request, self.device = request, device
        # Set when the password was right but the code was not (the view audits that failure;
        # a wrong password is audited by the sign-in throttle itself).
        self.code_failed = False
        if device is not None:
            self.fields["code"] = _code_field()

    def clean(self):
        cleaned = super().clean()
        password = cleaned.get("password")
        if password is None:
            return cleaned
        if not password_is_right(self.request, user=self.request.user, password=password):
            raise forms.ValidationError("That is not your password.")
        if self.device is not None and "code" in cleaned:
            try:
                check_code(self.device, cleaned["code"])
            except forms.ValidationError as exc:
                self.code_failed = True
                self.add_error("code", exc)
        return cleaned


class ThrottledPasswordChangeForm(PasswordChangeForm):
    """Django's password change, with the old password checked like a sign-in (throttled)."""

    def __init__(self, user, *args, request, **kwargs):
        super().__init__(user, *args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        old_password = self.cleaned_data["old_password"]
        if not password_is_right(self.request, user=self.user, password=old_password):
            raise forms.ValidationError(
                self.error_messages["password_incorrect"], code="password_incorrect"
            )
        return old_password
