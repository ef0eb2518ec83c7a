"""The support admin's shared pieces: a read-only base, status badges, audited actions."""

from django.contrib import admin
from django.utils.html import format_html
from django.utils.text import slugify

from audit.request_context import client_ip, user_agent
from audit.services import record_event

ADMIN_CSS = {"all": ["css/admin.css"]}


def badge(value: str, label: str):
    """The portal's status badge (same classes as ``partials/status_badge.html``)."""
    return format_html('<span class="badge badge-{}">{}</span>', slugify(value), label)


def audit_admin_action(request, *, org, event_name: str, parameters: dict, resources=()):
    """One audit event per object an admin action touched, with the staff member as principal."""
    record_event(
        org=org,
        actor=request.user,
        event_name=event_name,
        request_parameters=parameters,
        resources=list(resources),
        source_ip=client_ip(request),
        user_agent=user_agent(request),
        read_only=False,
    )


class PermissionActionsMixin:
    """``has_<perm>_permission`` for the custom permissions the actions declare."""

    def has_run_health_check_permission(self, request) -> bool:
        return request.user.has_perm("connections.run_health_check")

    def has_run_preflight_permission(self, request) -> bool:
        return request.user.has_perm("setup.run_preflight")

    def has_resend_notification_permission(self, request) -> bool:
        return request.user.has_perm("connections.resend_notification")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Look-ups only: no add, no change, no delete, for anyone (superusers included)."""

    class Media:
        css = ADMIN_CSS

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


HIDDEN_FIELDS = {"lease_token"}  # a worker's lease, meaningless to people


def concrete_field_names(model, wanted=None) -> list[str]:
    names = [
        f.name
        for f in model._meta.concrete_fields
        if not f.primary_key and f.name not in HIDDEN_FIELDS
    ]
    return [n for n in wanted if n in names] if wanted is not None else names


class ReviewRequestAdmin(ReadOnlyAdmin):
    """Both request kinds: found by ID (``12`` or ``#12``) too, numbered, status as a badge."""

    def get_search_results(self, request, queryset, search_term):
        base = queryset
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        number = search_term.strip().lstrip("#")
        if number.isdigit() and len(number) < 19:
            queryset = queryset | base.filter(pk=int(number))
        return queryset, may_have_duplicates

    @admin.display(description="request", ordering="pk")
    def request_number(self, obj):
        return f"#{obj.pk}"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())
