"""Support's read-only view of API tokens: who created which, scopes, use. Never the hash."""

from django.contrib import admin

from api.models import ApiToken
from security.admin_base import ReadOnlyAdmin


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "display_id",
        "organization",
        "created_by",
        "scopes",
        "expires_at",
        "revoked_at",
        "last_used_at",
    ]
    list_select_related = ["organization", "created_by"]
    search_fields = ["name", "prefix", "organization__name", "created_by__email"]
    raw_id_fields = ["organization", "created_by", "revoked_by"]
    # secret_hash is deliberately absent: not shown, not even to superusers.
    fields = [
        "organization",
        "name",
        "display_id",
        "scopes",
        "created_by",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
        "last_used_ip",
    ]
    readonly_fields = fields
