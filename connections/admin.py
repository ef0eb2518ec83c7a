"""Support admin for BYOK connections and regional keys: read-only, audited actions."""

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.timesince import timeuntil

from connections import notifications
from connections.lifecycle import MONITORED_STATES, RESTORE_WINDOW_STATES
from connections.models import ByokConnection, ConnectionState, RegionalKey, ScopedRevocation
from core.tasks import enqueue_on_commit
from security.admin_base import (
    PermissionActionsMixin,
    ReadOnlyAdmin,
    ReadOnlyInline,
    audit_admin_action,
    badge,
)


class RegionalKeyInline(ReadOnlyInline):
    model = RegionalKey
    fields = [
        "region",
        "key_arn",
        "generation",
        "is_current",
        "status_badge",
        "status_detail",
        "last_checked_at",
        "retired_at",
    ]
    readonly_fields = fields
    ordering = ["-is_current", "-generation", "region"]

    @admin.display(description="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())


def _state_notice(connection: ByokConnection) -> tuple[str, str]:
    """The notice of the connection's current state, as it is resent on request."""
    state = connection.get_state_display().lower()
    body = f"Key access is {state}."
    if connection.state_reason:
        body += f"\n{connection.state_reason}"
    if connection.state in RESTORE_WINDOW_STATES and connection.restore_deadline:
        body += (
            f"\nAccess can be restored until {connection.restore_deadline:%d %B %Y %H:%M} UTC; "
            "after that the encrypted data is unrecoverable by design."
        )
    return f"key access is {state} (notice resent by vendor support)", body + "\n"


@admin.register(ByokConnection)
class ByokConnectionAdmin(PermissionActionsMixin, ReadOnlyAdmin):
    list_display = [
        "organization",
        "aws_account_id",
        "location_name",
        "state_badge",
        "current_keys",
        "last_checked_at",
        "revoked_at",
        "restore_window",
    ]
    list_filter = ["state", "location"]
    search_fields = [
        "organization__name",
        "=aws_account_id",
        "organization__sites__name",
        "keys__key_arn",
    ]
    search_help_text = "Organization name, site, AWS account ID (exact) or key ARN."
    list_select_related = ["organization"]
    date_hierarchy = "created_at"
    inlines = [RegionalKeyInline]
    actions = ["run_health_check", "resend_notification"]
    fieldsets = [
        (None, {"fields": ["organization", "aws_account_id", "location", "role_arn_display"]}),
        (
            "State",
            {
                "fields": [
                    "state_badge",
                    "state_reason",
                    "state_changed_at",
                    "revoked_at",
                    "restore_deadline",
                    "restore_window",
                    "notices_sent",
                    "last_checked_at",
                    "transient_failures",
                ]
            },
        ),
        (
            "Checks",
            {"fields": ["external_id", "restore_checks", "customer_side", "created_at"]},
        ),
    ]
    readonly_fields = [
        "organization",
        "aws_account_id",
        "location",
        "role_arn_display",
        "state_badge",
        "state_reason",
        "state_changed_at",
        "revoked_at",
        "restore_deadline",
        "restore_window",
        "notices_sent",
        "last_checked_at",
        "transient_failures",
        "external_id",
        "restore_checks",
        "customer_side",
        "created_at",
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_current_keys=Count("keys", filter=Q(keys__is_current=True)))
        )

    @admin.display(description="location", ordering="location")
    def location_name(self, obj):
        return obj.get_location_display()

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj):
        return badge(obj.state, obj.get_state_display())

    @admin.display(description="current keys", ordering="_current_keys")
    def current_keys(self, obj):
        return getattr(obj, "_current_keys", None)

    @admin.display(description="restore window left", ordering="restore_deadline")
    def restore_window(self, obj):
        """The countdown of the restore window (revoked or restoring connections only)."""
        if obj.state not in RESTORE_WINDOW_STATES or not obj.restore_deadline:
            return "—"
        now = timezone.now()
        if obj.restore_deadline <= now:
            return "ended"
        until = f"{obj.restore_deadline:%d %b %Y %H:%M} UTC"
        return f"{timeuntil(obj.restore_deadline, now)} (until {until})"

    @admin.display(description="IAM role")
    def role_arn_display(self, obj):
        return obj.role_arn

    @admin.action(description="Run health check", permissions=["run_health_check"])
    def run_health_check(self, request, queryset):
        started, skipped = [], []
        for connection in queryset.select_related("organization"):
            if connection.state not in MONITORED_STATES:
                skipped.append(f"{connection.organization} ({connection.get_state_display()})")
                continue
            with transaction.atomic():
                audit_admin_action(
                    request,
                    org=connection.organization,
                    event_name="AdminRunHealthCheck",
                    parameters={"connectionId": connection.pk},
                    resources=_key_resources(connection),
                )
                enqueue_on_commit("connections.tasks.check_connection_health_task", connection.pk)
            started.append(str(connection.organization))
        if started:
            self.message_user(
                request,
                f"Health check started for {', '.join(started)}. The result shows in "
                "“Last checked” and the key states in a few seconds.",
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                f"Not checked (only {_monitored_labels()} connections are monitored): "
                f"{', '.join(skipped)}.",
                messages.WARNING,
            )

    @admin.action(
        description="Resend the notice of the current state to the org's admins",
        permissions=["resend_notification"],
    )
    def resend_notification(self, request, queryset):
        sent = []
        for connection in queryset.select_related("organization"):
            subject, body = _state_notice(connection)
            with transaction.atomic():
                audit_admin_action(
                    request,
                    org=connection.organization,
                    event_name="AdminResendNotification",
                    parameters={"connectionId": connection.pk, "notice": subject},
                )
                transaction.on_commit(
                    lambda c=connection, s=subject, b=body: notifications.connection_notice(
                        connection=c, subject=s, body=b
                    )
                )
            sent.append(str(connection.organization))
        self.message_user(
            request, f"Notice resent to the admins of {', '.join(sent)}.", messages.SUCCESS
        )


def _monitored_labels() -> str:
    labels = [s.label.lower() for s in ConnectionState if s in MONITORED_STATES]
    return ", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1 else "".join(labels)


def _key_resources(connection: ByokConnection) -> list[dict]:
    return [
        {"type": "AWS::KMS::Key", "ARN": arn, "accountId": connection.aws_account_id}
        for arn in connection.keys.filter(is_current=True).values_list("key_arn", flat=True)
    ]


@admin.register(RegionalKey)
class RegionalKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "key_arn",
        "organization",
        "region",
        "generation",
        "is_current",
        "status_badge",
        "last_checked_at",
    ]
    list_filter = ["status", "is_current", "region"]
    search_fields = [
        "=key_arn",
        "alias",
        "connection__organization__name",
        "=connection__aws_account_id",
    ]
    search_help_text = "Key ARN (exact), alias, organization name or AWS account ID (exact)."
    list_select_related = ["connection__organization"]
    readonly_fields = [
        "connection",
        "region",
        "key_arn",
        "alias",
        "generation",
        "is_current",
        "status",
        "status_detail",
        "last_checked_at",
        "retired_at",
        "created_at",
    ]
    fields = readonly_fields

    @admin.display(description="organization", ordering="connection__organization__name")
    def organization(self, obj):
        return obj.connection.organization

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())


@admin.register(ScopedRevocation)
class ScopedRevocationAdmin(ReadOnlyAdmin):
    """Scoped revocations (one site, app instance or period of data): read-only. State changes
    go through the customer's pages and the monitor, which audit them."""

    list_display = [
        "scope",
        "organization",
        "state_badge",
        "source",
        "revoked_at",
        "restore_deadline",
        "revoked_by",
    ]
    list_filter = ["state", "kind", "source"]
    search_fields = ["organization__name", "site__name", "app_instance__site__name"]
    search_help_text = "Organization or site name."
    list_select_related = ["organization", "site", "app_instance__site", "revoked_by"]
    raw_id_fields = ["data_keys"]
    readonly_fields = [
        "organization",
        "kind",
        "site",
        "app_instance",
        "period_from",
        "period_to",
        "covered_from",
        "covered_to",
        "data_key_count",
        "state",
        "state_reason",
        "state_changed_at",
        "source",
        "reason",
        "revoked_by",
        "revoked_at",
        "restore_deadline",
        "restored_at",
        "restore_checks",
        "notices_sent",
        "created_at",
    ]
    fields = readonly_fields

    @admin.display(description="scope")
    def scope(self, obj):
        return obj.label

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj):
        return badge(obj.state, obj.get_state_display())

    @admin.display(description="data keys (period)")
    def data_key_count(self, obj):
        return obj.data_keys.count()
