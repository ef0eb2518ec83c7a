"""Audit events in the admin: read-only, fast on a table that grows without bound."""

import json

from django.contrib import admin
from django.utils.html import format_html

from audit.filters import EventSourceListFilter
from audit.models import AuditEvent
from audit.pagination import EstimatedCountPaginator


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = [
        "event_time",
        "organization",
        "kind",
        "event_source",
        "event_name",
        "principal",
        "aws_region",
        "error_code",
    ]
    # Fixed cost on a table of millions: an estimated count, no date hierarchy (its min/max
    # and DISTINCT-year queries scan everything), newest first by primary key.
    paginator = EstimatedCountPaginator
    list_filter = ["kind", EventSourceListFilter]
    ordering = ["-id"]
    search_fields = ["=event_id", "=request_id", "=key_arn", "organization__name", "event_name"]
    list_select_related = ["organization"]
    show_full_result_count = False
    readonly_fields = ["pretty_record"]
    fields = ["pretty_record"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("record")

    @admin.display(description="CloudTrail record")
    def pretty_record(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.record, indent=2, sort_keys=True))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
