"""The audit log's filters: a GET form (bookmarkable URLs) and the filters it yields."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from django import forms
from django.contrib import admin

from audit.services import PORTAL_EVENT_SOURCE
from core.locations import LOCATIONS

ARN_RE = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12})?:\S+$")
REGION_RE = re.compile(r"^([a-z]{2}(-[a-z]+)+-\d{1,2}|global)$")
DATETIME_INPUT_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)

KNOWN_EVENT_SOURCES = ["kms.amazonaws.com", "sts.amazonaws.com", PORTAL_EVENT_SOURCE]
KNOWN_REGIONS = sorted({region for loc in LOCATIONS.values() for region in loc.regions})


@dataclass(frozen=True)
class AuditFilters:
    """What the admin asked to see. Empty strings and ``None`` mean "any"."""

    start: datetime | None = None
    end: datetime | None = None
    event_name: str = ""
    event_source: str = ""
    principal: str = ""
    resource: str = ""
    region: str = ""
    errors_only: bool = False
    request_id: str = ""

    @property
    def is_active(self) -> bool:
        return any(getattr(self, f.name) not in (None, "", False) for f in fields(self))


def filter_events(queryset, filters: AuditFilters):
    """``queryset`` narrowed to ``filters``: exact matches only, each one the second column of
    an (organization, …) index."""
    if filters.start is not None:
        queryset = queryset.filter(event_time__gte=filters.start)
    if filters.end is not None:
        queryset = queryset.filter(event_time__lte=filters.end)
    exact = {
        "event_name": filters.event_name,
        "event_source": filters.event_source,
        "principal": filters.principal,
        "key_arn": filters.resource,
        "aws_region": filters.region,
        "request_id": filters.request_id,
    }
    queryset = queryset.filter(**{field: value for field, value in exact.items() if value})
    if filters.errors_only:
        queryset = queryset.exclude(error_code="")
    return queryset


class UTCDateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, attrs=None):
        super().__init__(attrs=attrs, format="%Y-%m-%dT%H:%M")


def _time_field(label: str, help_text: str) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label,
        required=False,
        input_formats=DATETIME_INPUT_FORMATS,
        widget=UTCDateTimeInput(),
        help_text=help_text,
        error_messages={"invalid": "Enter a date and time like 2025-05-01T14:30 (UTC)."},
    )


class AuditFilterForm(forms.Form):
    """Every field is optional and combinable; the URL is the whole state of the view.

    ``from`` and ``to`` are Python keywords, so those two fields are added to ``base_fields``
    below the class (their clean methods are ``clean_from`` / ``clean_to``).
    """

    event_name = forms.CharField(
        label="Event name", required=False, max_length=100, help_text="Exact, e.g. Decrypt."
    )
    event_source = forms.CharField(
        label="Event source",
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"list": "audit-sources"}),
    )
    principal = forms.CharField(
        label="Principal",
        required=False,
        max_length=300,
        help_text="An e-mail address, role ARN or service name, exactly.",
    )
    resource = forms.CharField(
        label="Key ARN",
        required=False,
        max_length=300,
        help_text="The full ARN of one of your KMS keys.",
    )
    region = forms.CharField(
        label="Region",
        required=False,
        max_length=30,
        widget=forms.TextInput(attrs={"list": "audit-regions"}),
    )
    request_id = forms.CharField(label="Request ID", required=False, max_length=100)
    errors_only = forms.BooleanField(label="Errors only", required=False)

    def clean_resource(self) -> str:
        value = self.cleaned_data["resource"]
        if value and not ARN_RE.match(value):
            raise forms.ValidationError(
                "Enter a full ARN, like arn:aws:kms:us-east-1:111122223333:key/1234abcd-…"
            )
        return value

    def clean_region(self) -> str:
        value = self.cleaned_data["region"]
        if value and not REGION_RE.match(value):
            raise forms.ValidationError("Enter an AWS region code such as us-east-1.")
        return value

    def _clean_time(self, name: str) -> datetime | None:
        value = self.cleaned_data.get(name)
        if value is not None and not (EARLIEST <= value < LATEST):
            raise forms.ValidationError("Enter a date between 1970 and 8999.")
        return value

    def clean_from(self) -> datetime | None:
        return self._clean_time("from")

    def clean_to(self) -> datetime | None:
        return self._clean_time("to")

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("from"), cleaned.get("to")
        if start is not None and end is not None and start > end:
            self.add_error("to", "The end of the range must be after its start.")
        return cleaned

    def filters(self) -> AuditFilters:
        """The validated filters; call only after ``is_valid()``."""
        data = self.cleaned_data
        return AuditFilters(
            start=data.get("from"),
            end=data.get("to"),
            event_name=data["event_name"],
            event_source=data["event_source"],
            principal=data["principal"],
            resource=data["resource"],
            region=data["region"],
            errors_only=data["errors_only"],
            request_id=data["request_id"],
        )


AuditFilterForm.base_fields = {
    "from": _time_field("From (UTC)", "Events at or after this time."),
    "to": _time_field("To (UTC)", "Events at or before this time."),
    **AuditFilterForm.base_fields,
}


class EventSourceListFilter(admin.SimpleListFilter):
    """The admin's "event source" filter with fixed choices.

    ``list_filter = ["event_source"]`` would ask the database for ``SELECT DISTINCT
    event_source`` over every event on each changelist load: seconds on millions of rows.
    """

    title = "event source"
    parameter_name = "event_source"

    def lookups(self, request, model_admin):
        return [(source, source) for source in KNOWN_EVENT_SOURCES]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(event_source=value) if value else queryset
