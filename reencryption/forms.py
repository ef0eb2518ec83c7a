"""Forms of the re-encryption pages."""

import datetime

from django import forms


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

        from reencryption.services import MAX_WINDOW_AHEAD, key_arn_problem

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
