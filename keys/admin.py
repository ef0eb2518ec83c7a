"""Support staff's view of BYOK connections and requests: look-ups, never key material.

Security-relevant fields are read-only: state changes go through services, which audit them.
"""

from django.contrib import admin

from keys.models import ByokConnection, PreflightRun, RegionalKey, RequestEvent, SetupRequest


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RegionalKeyInline(ReadOnlyInline):
    model = RegionalKey
    fields = [
        "region",
        "key_arn",
        "generation",
        "is_current",
        "status",
        "status_detail",
        "last_checked_at",
    ]
    readonly_fields = fields


@admin.register(ByokConnection)
class ByokConnectionAdmin(admin.ModelAdmin):
    list_display = [
        "organization",
        "aws_account_id",
        "location",
        "state",
        "last_checked_at",
        "revoked_at",
    ]
    list_filter = ["state", "location"]
    search_fields = ["organization__name", "aws_account_id", "keys__key_arn"]
    list_select_related = ["organization"]
    inlines = [RegionalKeyInline]
    readonly_fields = [
        "organization",
        "aws_account_id",
        "location",
        "role_name",
        "external_id",
        "state",
        "state_reason",
        "state_changed_at",
        "revoked_at",
        "restore_deadline",
        "last_checked_at",
        "transient_failures",
        "restore_checks",
        "customer_side",
        "created_at",
    ]

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


class RequestEventInline(ReadOnlyInline):
    model = RequestEvent
    fields = ["created_at", "kind", "actor", "internal", "message"]
    readonly_fields = fields


class PreflightRunInline(ReadOnlyInline):
    model = PreflightRun
    fields = ["created_at", "status", "started_by", "finished_at", "checks"]
    readonly_fields = fields


@admin.register(SetupRequest)
class SetupRequestAdmin(admin.ModelAdmin):
    list_display = [
        "pk",
        "organization",
        "site_name",
        "location",
        "status",
        "assignee",
        "created_at",
    ]
    list_filter = ["status", "location"]
    search_fields = ["organization__name", "aws_account_id", "site_name"]
    list_select_related = ["organization", "assignee"]
    date_hierarchy = "created_at"
    inlines = [RequestEventInline, PreflightRunInline]
    readonly_fields = [
        "organization",
        "requested_by",
        "aws_account_id",
        "site_name",
        "location",
        "apps",
        "status",
        "assignee",
        "claimed_at",
        "closed_at",
        "rejection_reason",
        "created_at",
    ]

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False
