"""Support admin for re-encryption requests and jobs: look-ups and live progress, read-only."""

from django.contrib import admin

from reencryption.models import (
    ReencryptionEvent,
    ReencryptionJob,
    ReencryptionPreflight,
    ReencryptionRequest,
)
from security.admin_base import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    ReviewRequestAdmin,
    badge,
    concrete_field_names,
)


class ReencryptionPreflightInline(ReadOnlyInline):
    model = ReencryptionPreflight
    fields = readonly_fields = ["created_at", "status", "started_by", "finished_at", "checks"]


class ReencryptionEventInline(ReadOnlyInline):
    model = ReencryptionEvent
    fields = readonly_fields = ["created_at", "kind", "actor", "internal", "message"]


@admin.register(ReencryptionRequest)
class ReencryptionRequestAdmin(ReviewRequestAdmin):
    list_display = ["request_number", "organization", "status_badge", "assignee", "created_at"]
    list_filter = ["status", "mode"]
    search_fields = ["organization__name", "=connection__aws_account_id"]
    search_help_text = "Request ID (#12 or 12), organization name or AWS account ID (exact)."
    list_select_related = ["organization", "assignee"]
    date_hierarchy = "created_at"
    fields = readonly_fields = concrete_field_names(ReencryptionRequest)
    inlines = [ReencryptionPreflightInline, ReencryptionEventInline]


@admin.register(ReencryptionJob)
class ReencryptionJobAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "organization", "state_badge", "progress", "heartbeat_at"]
    list_filter = ["state", "phase", "mode"]
    search_fields = ["connection__organization__name", "=request__id"]
    list_select_related = ["connection__organization"]
    fields = readonly_fields = concrete_field_names(ReencryptionJob)

    @admin.display(description="organization")
    def organization(self, obj):
        return obj.connection.organization

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj):
        return badge(obj.state, obj.get_state_display())

    @admin.display(description="progress")
    def progress(self, obj):
        return f"{obj.done} / {obj.total} {obj.unit} ({obj.percent}%)" if obj.total else "—"
