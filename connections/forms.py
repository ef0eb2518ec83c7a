"""The kill switch's forms: revoke and restore, with the same confirmation."""

from django import forms

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
