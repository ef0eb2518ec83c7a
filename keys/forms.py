"""Forms of the keys app. Every rule a customer can break has a message they can act on."""

import datetime
import re

from django import forms
from django.conf import settings

from keys.locations import LOCATION_CHOICES, get_location
from keys.models import ByokConnection, SetupRequest
from orgs.models import SITE_NAME_VALIDATOR, AppInstance, Site

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


class RejectRequestForm(forms.Form):
    reason = forms.CharField(
        label="Reason (the customer sees it)",
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
    )


class InternalNoteForm(forms.Form):
    note = forms.CharField(
        label="Internal note (vendor staff only)",
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=4000,
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


class RevokeAccessForm(forms.Form):
    """Destructive: the admin states why, types the org's name and re-enters the password."""

    reason = forms.CharField(
        label="Why are you revoking access?",
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Recorded in the audit log and sent to your admins and account representative.",
    )
    confirm_name = forms.CharField(label="Type the organization's name to confirm", max_length=200)
    password = forms.CharField(
        label="Your password",
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        strip=False,
        max_length=200,
    )

    def __init__(self, *args, org, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.org, self.user = org, user

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Give a reason.")
        return reason

    def clean_confirm_name(self) -> str:
        value = self.cleaned_data["confirm_name"].strip()
        if value != self.org.name:
            raise forms.ValidationError(f"Type {self.org.name} exactly to confirm.")
        return value

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your password.")
        return password


class RestoreAccessForm(forms.Form):
    confirm = forms.BooleanField(
        label="I have allowed the vendor again in the role's trust policy and re-enabled the key "
        "in every region.",
        error_messages={"required": "Confirm that the trust policy and keys are back."},
    )


# --- Re-encryption ----------------------------------------------------------------------------


def _time_zone_choices() -> list[tuple[str, str]]:
    from zoneinfo import available_timezones

    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))
    return [("UTC", "UTC")] + [(z, z.replace("_", " ")) for z in zones]


class ReencryptionRequestForm(forms.Form):
    """The admin's re-encryption request: the new keys, when, and how.

    Window rules: date and time are read in the chosen IANA time zone (zoneinfo); a time that
    does not exist that day (clocks spring forward) or exists twice (clocks fall back) is
    refused with a message naming it; the start must be in the future and within 90 days.
    """

    KEYS_ALIAS, KEYS_ARNS = "alias", "arns"
    WHEN_NOW, WHEN_WINDOW = "now", "window"

    key_source = forms.ChoiceField(
        label="New keys",
        widget=forms.RadioSelect,
        initial=KEYS_ALIAS,
        choices=[
            (
                KEYS_ALIAS,
                "Find them by the alias alias/byok-key-management-next (replacement-keys template)",
            ),
            (KEYS_ARNS, "Enter the key ARN of each region"),
        ],
    )
    when = forms.ChoiceField(
        label="When",
        widget=forms.RadioSelect,
        initial=WHEN_NOW,
        choices=[
            (WHEN_NOW, "As soon as it is approved"),
            (WHEN_WINDOW, "In a maintenance window"),
        ],
        help_text="Either way your apps stay online; a window only chooses when the work runs.",
    )
    window_date = forms.DateField(
        label="Window date",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        input_formats=["%Y-%m-%d"],
    )
    window_time = forms.TimeField(
        label="Window start time",
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        input_formats=["%H:%M", "%H:%M:%S"],
    )
    window_timezone = forms.ChoiceField(label="Time zone", required=False, initial="UTC")
    mode = forms.ChoiceField(
        label="Mode",
        widget=forms.RadioSelect,
        initial="rewrap",
        choices=[
            (
                "rewrap",
                "Re-wrap (recommended): your existing data keys are re-wrapped under the new keys",
            ),
            (
                "rotate",
                "Full rotation: every record is re-encrypted under new data keys "
                "(for a suspected data key compromise; slower)",
            ),
        ],
    )

    def __init__(self, *args, connection, **kwargs):
        super().__init__(*args, **kwargs)
        self.connection = connection
        self.regions = list(connection.location_info.regions)
        self.fields["window_timezone"].choices = _time_zone_choices()
        for region in self.regions:
            self.fields[f"key_arn_{region}"] = forms.CharField(
                label=f"New key ARN in {region}",
                required=False,
                max_length=300,
                widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
                help_text=f"arn:aws:kms:{region}:{connection.aws_account_id}:key/…",
            )

    @property
    def arn_fields(self):
        return [self[f"key_arn_{region}"] for region in self.regions]

    def clean(self):
        from zoneinfo import ZoneInfo

        from django.utils import timezone

        from keys.reencryption import MAX_WINDOW_AHEAD, key_arn_problem

        cleaned = super().clean()
        cleaned["key_arns"] = {}
        if cleaned.get("key_source") == self.KEYS_ARNS:
            arns = {r: (cleaned.get(f"key_arn_{r}") or "").strip() for r in self.regions}
            for region, arn in arns.items():
                problem = key_arn_problem(self.connection, region, arn)
                if problem:
                    self.add_error(f"key_arn_{region}", problem)
            cleaned["key_arns"] = arns
        cleaned["scheduled_for"] = None
        if cleaned.get("when") == self.WHEN_WINDOW:
            day, at = cleaned.get("window_date"), cleaned.get("window_time")
            zone_name = cleaned.get("window_timezone") or "UTC"
            if day is None and "window_date" not in self.errors:
                self.add_error("window_date", "Choose the date of the maintenance window.")
            if at is None and "window_time" not in self.errors:
                self.add_error("window_time", "Choose the time the maintenance window starts.")
            if day is None or at is None:
                return cleaned
            zone = ZoneInfo(zone_name)
            naive = datetime.datetime.combine(day, at)
            first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
            as_utc = first.astimezone(datetime.UTC)
            if as_utc.astimezone(zone).replace(tzinfo=None) != naive:
                self.add_error(
                    "window_time",
                    f"{at:%H:%M} does not exist on {day:%d %B %Y} in {zone_name} (the clocks "
                    "skip that hour). Choose another time.",
                )
                return cleaned
            if first.utcoffset() != second.utcoffset():
                self.add_error(
                    "window_time",
                    f"{at:%H:%M} happens twice on {day:%d %B %Y} in {zone_name} (the clocks go "
                    "back). Choose a time that happens once.",
                )
                return cleaned
            now = timezone.now()
            if as_utc <= now:
                self.add_error(
                    "window_date",
                    f"The window must start in the future; {day:%d %B %Y} {at:%H:%M} "
                    f"{zone_name} has passed.",
                )
            elif as_utc > now + MAX_WINDOW_AHEAD:
                self.add_error("window_date", "The window must start within the next 90 days.")
            cleaned["scheduled_for"] = as_utc
            cleaned["window_timezone"] = zone_name
        return cleaned


class CancelReencryptionForm(forms.Form):
    confirm = forms.BooleanField(
        label="Cancel this re-encryption request",
        error_messages={"required": "Tick the box to cancel the request."},
    )
