"""The API tokens page's form."""

from datetime import timedelta

from django import forms
from django.conf import settings
from django.utils import timezone

from api.models import SCOPE_CHOICES

LIFETIME_CHOICES = [(30, "30 days"), (90, "90 days"), (180, "180 days"), (365, "1 year")]


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=100,
        help_text="What uses the token, e.g. “SOAR playbook: key misuse”.",
    )
    scopes = forms.MultipleChoiceField(
        label="Scopes",
        choices=SCOPE_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one scope."},
    )
    lifetime_days = forms.TypedChoiceField(
        label="Expires after",
        choices=LIFETIME_CHOICES,
        coerce=int,
        initial=90,
        help_text="Every token expires; create a new one before it does.",
    )

    def clean_lifetime_days(self) -> int:
        days = self.cleaned_data["lifetime_days"]
        if days > settings.API_TOKEN_MAX_LIFETIME_DAYS:
            raise forms.ValidationError("Too long a lifetime.")
        return days

    def expires_at(self):
        return timezone.now() + timedelta(days=self.cleaned_data["lifetime_days"])
