"""Forms of the setup request pages and the rep queue."""

import re

from django import forms
from django.conf import settings

from connections.models import ByokConnection
from core.locations import LOCATION_CHOICES, get_location
from orgs.models import SITE_NAME_VALIDATOR, AppInstance, Site
from setup.models import SetupRequest

ACCOUNT_ID_RE = re.compile(r"^[0-9]{12}$")


class SetupRequestForm(forms.Form):
    aws_account_id = forms.CharField(
        label="AWS account ID",
        max_length=40,
        help_text="The 12-digit ID of the AWS account dedicated to key management.",
        widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "off"}),
    )
    existing_site = forms.ChoiceField(
        label="Site",
        required=False,
        help_text="Add apps to one of your BYOK sites, or leave empty and name a new site.",
    )
    new_site_name = forms.CharField(
        label="New site name",
        required=False,
        max_length=100,
        help_text="3–63 lowercase letters, digits and hyphens; becomes <name>.vendor.example.",
    )
    location = forms.ChoiceField(
        label="Location",
        choices=LOCATION_CHOICES,
        help_text="Where the app data is hosted. Your keys live in this location's AWS regions; "
        "data never moves out of it.",
    )
    apps = forms.MultipleChoiceField(
        label="Apps to encrypt with your keys",
        choices=AppInstance.App.choices,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one app."},
    )

    def __init__(self, *args, org, **kwargs):
        super().__init__(*args, **kwargs)
        self.org = org
        self.connection = ByokConnection.objects.filter(organization=org).first()
        self.byok_sites = {
            s.name: s
            for s in Site.objects.filter(
                organization=org, app_instances__encryption=AppInstance.Encryption.BYOK
            )
            .distinct()
            .prefetch_related("app_instances")
        }
        self.fields["existing_site"].choices = [("", "— a new site —")] + [
            (name, name) for name in sorted(self.byok_sites)
        ]
        if self.connection:
            self.fields["aws_account_id"].initial = self.connection.aws_account_id
            self.fields["location"].initial = self.connection.location

    def clean_aws_account_id(self) -> str:
        value = self.cleaned_data["aws_account_id"].strip().replace("-", "").replace(" ", "")
        if not ACCOUNT_ID_RE.match(value):
            raise forms.ValidationError("An AWS account ID is exactly 12 digits.")
        if value == settings.VENDOR_AWS_ACCOUNT_ID:
            raise forms.ValidationError(
                "That is the vendor's own AWS account. Use an account your organization owns."
            )
        if self.connection and self.connection.aws_account_id != value:
            raise forms.ValidationError(
                f"Your organization's keys are in AWS account {self.connection.aws_account_id}. "
                "All BYOK sites of an organization use that one account."
            )
        return value

    def clean_new_site_name(self) -> str:
        return self.cleaned_data["new_site_name"].strip()

    def clean(self):
        cleaned = super().clean()
        existing, new_name = cleaned.get("existing_site"), cleaned.get("new_site_name")
        location, apps = cleaned.get("location"), cleaned.get("apps") or []
        if existing and new_name and new_name != existing:
            self.add_error("new_site_name", "Choose an existing site or name a new one, not both.")
            return cleaned
        site_name = existing or new_name
        if not site_name:
            self.add_error("new_site_name", "Name a new site, or choose one of your BYOK sites.")
            return cleaned
        site = self.byok_sites.get(site_name)
        if site is None:
            self._check_new_site_name(site_name)
        if location and self.connection and location != self.connection.location:
            loc = get_location(self.connection.location)
            self.add_error(
                "location",
                f"Your organization's keys and BYOK sites are in {loc.name}. "
                "Data never moves out of its location, so new BYOK apps use the same one.",
            )
        if site is not None:
            self._check_apps_on_existing_site(site, apps)
        self._check_open_requests(site_name, apps)
        cleaned["site_name"] = site_name
        cleaned["site"] = site
        return cleaned

    def _check_new_site_name(self, name: str) -> None:
        try:
            SITE_NAME_VALIDATOR(name)
        except forms.ValidationError as exc:
            self.add_error("new_site_name", exc)
            return
        taken = Site.objects.filter(name=name).first()
        if taken is None:
            return
        if taken.organization_id == self.org.pk:
            self.add_error(
                "new_site_name",
                f"{name} uses vendor-managed keys. Existing sites cannot be converted to BYOK: "
                "choose a new site name.",
            )
        else:
            self.add_error("new_site_name", f"The site name {name} is taken. Choose another.")

    def _check_apps_on_existing_site(self, site: Site, apps: list[str]) -> None:
        present = {i.app: i for i in site.app_instances.all()}
        for app in apps:
            instance = present.get(app)
            if instance is None:
                continue
            label = instance.get_app_display()
            if instance.encryption == AppInstance.Encryption.BYOK:
                self.add_error("apps", f"{label} on {site.name} already uses your keys.")
            else:
                self.add_error(
                    "apps",
                    f"{label} on {site.name} uses vendor-managed keys and cannot be converted to "
                    "BYOK. Ask for it on a new site instead.",
                )

    def _check_open_requests(self, site_name: str, apps: list[str]) -> None:
        open_requests = SetupRequest.objects.filter(
            site_name=site_name, status__in=SetupRequest.OPEN_STATUSES
        )
        for req in open_requests:
            if req.organization_id != self.org.pk:
                # Another org has an open request for this name: first come, first served.
                self.add_error(
                    "new_site_name", f"The site name {site_name} is taken. Choose another."
                )
                return
            overlap = sorted(set(apps) & set(req.apps))
            if overlap:
                names = ", ".join(AppInstance.App(a).label for a in overlap)
                self.add_error(
                    "apps",
                    f"Request #{req.pk} already asks for {names} on {site_name}; "
                    "wait for it to be processed.",
                )


class StaffQueueFilterForm(forms.Form):
    status = forms.ChoiceField(
        required=False,
        choices=[("", "Open")] + list(SetupRequest.Status.choices) + [("all", "All")],
    )
    location = forms.ChoiceField(required=False, choices=[("", "Any location")] + LOCATION_CHOICES)
    age = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Any age"),
            ("1", "Older than 1 day"),
            ("3", "Older than 3 days"),
            ("7", "Older than a week"),
        ],
    )
