"""Support admin for setup requests."""

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Max

from security.admin_base import (
    PermissionActionsMixin,
    ReadOnlyInline,
    ReviewRequestAdmin,
    audit_admin_action,
    badge,
)
from setup import notifications
from setup.models import PreflightRun, RequestEvent, SetupRequest
from setup.preflight import PreflightNotAllowed, start_preflight


class RequestEventInline(ReadOnlyInline):
    model = RequestEvent
    fields = ["created_at", "kind", "actor", "internal", "message"]
    readonly_fields = fields


class PreflightRunInline(ReadOnlyInline):
    model = PreflightRun
    fields = ["created_at", "status_badge", "started_by", "finished_at", "checks"]
    readonly_fields = fields

    @admin.display(description="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())


@admin.register(SetupRequest)
class SetupRequestAdmin(PermissionActionsMixin, ReviewRequestAdmin):
    list_display = [
        "request_number",
        "organization",
        "site_name",
        "location_name",
        "status_badge",
        "last_preflight",
        "assignee",
        "created_at",
    ]
    list_filter = ["status", "location"]
    search_fields = ["organization__name", "=aws_account_id", "site_name"]
    search_help_text = "Request ID (#12 or 12), organization name, site or AWS account ID (exact)."
    list_select_related = ["organization", "assignee"]
    date_hierarchy = "created_at"
    inlines = [PreflightRunInline, RequestEventInline]
    actions = ["run_preflight", "resend_notification"]
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
    fields = readonly_fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_last_preflight=Max("preflights__created_at"))

    @admin.display(description="location", ordering="location")
    def location_name(self, obj):
        return obj.get_location_display()

    @admin.display(description="last preflight", ordering="_last_preflight")
    def last_preflight(self, obj):
        return getattr(obj, "_last_preflight", None)

    @admin.action(description="Run preflight", permissions=["run_preflight"])
    def run_preflight(self, request, queryset):
        for setup_request in queryset.select_related("organization"):
            try:
                with transaction.atomic():
                    run = start_preflight(setup_request=setup_request, actor=request.user)
                    audit_admin_action(
                        request,
                        org=setup_request.organization,
                        event_name="AdminRunPreflight",
                        parameters={"setupRequestId": setup_request.pk, "preflightId": run.pk},
                    )
            except PreflightNotAllowed as exc:
                self.message_user(request, f"#{setup_request.pk}: {exc}", messages.WARNING)
            else:
                self.message_user(
                    request,
                    f"#{setup_request.pk}: preflight #{run.pk} started; its report appears on "
                    "the request in a few seconds.",
                    messages.SUCCESS,
                )

    @admin.action(
        description="Resend the request's notice (open: to reps; closed: to the customer)",
        permissions=["resend_notification"],
    )
    def resend_notification(self, request, queryset):
        for setup_request in queryset.select_related("organization"):
            notice = (
                notifications.request_submitted
                if setup_request.is_open
                else notifications.request_closed
            )
            with transaction.atomic():
                audit_admin_action(
                    request,
                    org=setup_request.organization,
                    event_name="AdminResendNotification",
                    parameters={"setupRequestId": setup_request.pk, "notice": notice.__name__},
                )
                transaction.on_commit(lambda pk=setup_request.pk, send=notice: send(pk))
            self.message_user(
                request,
                f"#{setup_request.pk}: "
                + (
                    "notice resent to the account representatives."
                    if setup_request.is_open
                    else "notice resent to the customer's admins."
                ),
                messages.SUCCESS,
            )
