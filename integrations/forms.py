"""Forms of the audit integrations page: the CloudTrail source and the SIEM webhook."""

import re

from django import forms

from audit.models import CloudTrailSource
from audit.webhook_signing import MAX_KEY_BYTES, MIN_KEY_BYTES, SECRET_PREFIX, whsec_key
from audit.webhooks import WebhookRefused, validate_webhook_url

# S3 bucket names: 3–63 lowercase letters, digits, dots and hyphens, starting and ending with a
# letter or digit.
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")


class CloudTrailSourceForm(forms.Form):
    bucket = forms.CharField(
        label="S3 bucket",
        max_length=63,
        help_text="The bucket your trail delivers log files to.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    prefix = forms.CharField(
        label="Prefix",
        required=False,
        max_length=900,
        help_text="e.g. AWSLogs/123456789012/CloudTrail/ — empty for the whole bucket.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    region = forms.CharField(
        label="Bucket region",
        max_length=30,
        help_text="The AWS region the bucket is in, e.g. us-east-1.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    scope = forms.ChoiceField(
        label="Events to import",
        choices=CloudTrailSource.Scope.choices,
        initial=CloudTrailSource.Scope.BYOK,
        widget=forms.RadioSelect,
        help_text="Choose every event for a trail dedicated to key management, or to import an "
        "audit export of another organization.",
    )
    enabled = forms.BooleanField(label="Import new log files automatically", required=False)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "cloudtrail_%s")  # unique ids: two forms share the page
        super().__init__(*args, **kwargs)

    def clean_bucket(self):
        bucket = self.cleaned_data["bucket"].strip()
        if not BUCKET_RE.match(bucket) or ".." in bucket:
            raise forms.ValidationError(
                "Enter a bucket name: 3–63 lowercase letters, digits, dots and hyphens."
            )
        return bucket

    def clean_prefix(self):
        return self.cleaned_data["prefix"].strip().lstrip("/")

    def clean_region(self):
        region = self.cleaned_data["region"].strip().lower()
        if not REGION_RE.match(region):
            raise forms.ValidationError("Enter an AWS region code, e.g. us-east-1.")
        return region


class WebhookForm(forms.Form):
    url = forms.URLField(
        label="Webhook URL",
        max_length=500,
        assume_scheme="https",
        help_text="An https:// endpoint of your SIEM. Each event is POSTed as CloudTrail JSON "
        "with its provenance.",
        widget=forms.URLInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    secret = forms.CharField(
        label="Shared secret",
        required=False,
        min_length=16,
        max_length=256,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="A Standard Webhooks secret (whsec_ and base64 of 24 to 64 random bytes), "
        "or a passphrase of at least 16 characters. Signs each request (webhook-signature). "
        "Stored encrypted and never shown again.",
    )
    enabled = forms.BooleanField(label="Send events", required=False)

    def __init__(self, *args, has_secret: bool = False, **kwargs):
        kwargs.setdefault("auto_id", "webhook_%s")
        super().__init__(*args, **kwargs)
        self.has_secret = has_secret
        if has_secret:
            kept = "A secret is set. Leave this empty to keep it, or enter a new one to replace it."
            self.fields["secret"].help_text = kept

    def clean_url(self):
        try:
            return validate_webhook_url(self.cleaned_data["url"])
        except WebhookRefused as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_secret(self):
        secret = self.cleaned_data.get("secret") or ""
        if not secret and not self.has_secret:
            raise forms.ValidationError("Enter a shared secret of at least 16 characters.")
        if secret.startswith(SECRET_PREFIX):
            # Libraries decode a whsec_ secret: it must be one, or receivers verify nothing.
            key = whsec_key(secret)
            if key is None or not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
                raise forms.ValidationError(
                    f"A secret starting with {SECRET_PREFIX} must be followed by the base64 of "
                    f"{MIN_KEY_BYTES} to {MAX_KEY_BYTES} random bytes."
                )
        return secret
