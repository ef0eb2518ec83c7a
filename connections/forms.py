"""The kill switch's forms: revoke and restore, with the same confirmation."""

from datetime import timedelta

from django import forms
from django.utils import timezone

from security.throttling import password_is_right


class StepUpForm(forms.Form):
    """The confirmation of a destructive kill-switch action: the organization's name typed and
    the password re-entered (the views add two-factor and a recent sign-in). The password is
    checked through the sign-in throttle: a locked-out address cannot guess it here."""

    confirm_name = forms.CharField(label="Type the organization's name to confirm", max_length=200)
    password = forms.CharField(
        label="Your password",
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        strip=False,
        max_length=200,
    )

    def __init__(self, *args, org, user, request, **kwargs):
        super().__init__(*args, **kwargs)
        self.org, self.user, self.request = org, user, request

    def clean_confirm_name(self) -> str:
        value = self.cleaned_data["confirm_name"].strip()
        if value != self.org.name:
            raise forms.ValidationError(f"Type {self.org.name} exactly to confirm.")
        return value

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not password_is_right(self.request, user=self.user, password=password):
            raise forms.ValidationError("That is not your password.")
        return password


class RevokeAccessForm(StepUpForm):
    """Destructive: the admin states why, types the org's name and re-enters the password."""

    reason = forms.CharField(
        label="Why are you revoking access?",
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Recorded in the audit log and sent to your admins and account representative.",
    )

    field_order = ["reason", "confirm_name", "password"]

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Give a reason.")
        return reason


class RestoreAccessForm(StepUpForm):
    """Restoring brings the apps back onto the customer's keys: the same step-up as revoking."""

    confirm = forms.BooleanField(
        label="I have allowed the vendor again in the role's trust policy and re-enabled the key "
        "in every region.",
        error_messages={"required": "Confirm that the trust policy and keys are back."},
    )

    field_order = ["confirm", "confirm_name", "password"]


class RevokePeriodForm(RevokeAccessForm):
    """A period of data: two times (UTC), the start before the end, neither in the future."""

    period_from = forms.DateTimeField(
        label="From (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
    )
    period_to = forms.DateTimeField(
        label="To (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        help_text="At the latest now.",
    )

    field_order = ["period_from", "period_to", "reason", "confirm_name", "password"]

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("period_from"), cleaned.get("period_to")
        now = timezone.now()
        if start and start > now:
            self.add_error("period_from", "The period cannot start in the future.")
        if end and end > now + timedelta(minutes=1):
            self.add_error(
                "period_to",
                f"The period cannot end in the future: it is {now:%Y-%m-%d %H:%M} UTC now.",
            )
        if start and end and start >= end:
            self.add_error("period_to", "The end must come after the start.")
        elif end and end >= now.replace(second=0, microsecond=0):
            cleaned["period_to"] = now  # the current minute means "until now" (inputs are minutes)
        return cleaned


class RestoreScopeForm(StepUpForm):
    """Restoring a scope: the same step-up as restoring the whole organization."""

    confirm = forms.BooleanField(
        label="I want this data readable again, and I have removed any Deny statement for it "
        "from my key policies.",
        error_messages={"required": "Confirm that this scope may come back."},
    )

    field_order = ["confirm", "confirm_name", "password"]
