"""Support admin for data keys and app data health: no key material, ever."""

from django.contrib import admin

from connections.models import DataKey, DataKeyWrapping
from dataplane.models import AppDataHealth
from security.admin_base import (
    ReadOnlyAdmin,
    ReadOnlyInline,
)


class DataKeyWrappingInline(ReadOnlyInline):
    """Where a data key is wrapped. The wrapped bytes themselves are never shown."""

    model = DataKeyWrapping
    fields = ["region", "regional_key", "wrapped_size", "created_at", "retired_at"]
    readonly_fields = fields

    def has_view_permission(self, request, obj=None):
        # Part of the data key: whoever may look a data key up sees where it is wrapped.
        return request.user.has_perm("connections.view_datakey")

    @admin.display(description="wrapped size")
    def wrapped_size(self, obj):
        return f"{len(obj.blob or b'')} bytes"


@admin.register(DataKey)
class DataKeyAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "app_instance", "organization", "is_current", "destroyed_at"]
    list_filter = ["is_current", ("destroyed_at", admin.EmptyFieldListFilter)]
    search_fields = ["app_instance__site__name", "app_instance__site__organization__name"]
    list_select_related = ["app_instance__site__organization"]
    date_hierarchy = "created_at"
    raw_id_fields = ["app_instance"]
    fields = ["app_instance", "encryption_context", "is_current", "destroyed_at", "created_at"]
    readonly_fields = fields
    inlines = [DataKeyWrappingInline]
    show_full_result_count = False

    @admin.display(description="organization", ordering="app_instance__site__organization__name")
    def organization(self, obj):
        return obj.app_instance.site.organization


@admin.register(AppDataHealth)
class AppDataHealthAdmin(ReadOnlyAdmin):
    list_display = ["app_instance", "organization", "last_read_at", "last_failure_at"]
    search_fields = ["app_instance__site__name", "app_instance__site__organization__name"]
    list_select_related = ["app_instance__site__organization"]
    fields = ["app_instance", "last_read_at", "last_failure_at", "last_failure"]
    readonly_fields = fields

    @admin.display(description="organization", ordering="app_instance__site__organization__name")
    def organization(self, obj):
        return obj.app_instance.site.organization
