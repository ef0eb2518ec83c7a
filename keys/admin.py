"""Support staff's view of BYOK connections, keys and requests: look-ups and three actions.

- Everything is read-only: state changes go through services, which audit them. Nothing here
  can be added or deleted (connections, requests, keys and data keys are audited objects).
- No key material: wrapped data keys appear only as region, key ARN and length in bytes; app
  records (ciphertext) are not registered at all.
- Actions, each gated by its own permission (``orgs/staff_roles.py``) and audited with the staff
  member as principal: run a health check (``keys.run_health_check``), run a preflight
  (``keys.run_preflight``), resend a notice (``keys.resend_notification``).
"""

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils.html import format_html
from django.utils.text import slugify

from audit.request_context import client_ip, user_agent
from audit.services import record_event
from keys import notifications
from keys.models import (
    AppDataHealth,
    ByokConnection,
    DataKey,
    DataKeyWrapping,
    PreflightRun,
    RegionalKey,
    RequestEvent,
    SetupRequest,
)
from keys.revocation import MONITORED_STATES

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
        return request.user.has_perm("keys.run_health_check")

    def has_run_preflight_permission(self, request) -> bool:
        return request.user.has_perm("keys.run_preflight")

    def has_resend_notification_permission(self, request) -> bool:
        return request.user.has_perm("keys.resend_notification")


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


# --- Connections and their keys -----------------------------------------------------------


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
    if connection.state == "revoked" and connection.restore_deadline:
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

    @admin.display(description="IAM role")
    def role_arn_display(self, obj):
        return obj.role_arn

    @admin.action(description="Run health check", permissions=["run_health_check"])
    def run_health_check(self, request, queryset):
        from keys.tasks import check_connection_health_task

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
                transaction.on_commit(
                    lambda pk=connection.pk: check_connection_health_task.delay(pk)
                )
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
                f"Not checked (only active, degraded, re-encrypting and revoked connections are "
                f"monitored): {', '.join(skipped)}.",
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


# --- Data keys: metadata only ---------------------------------------------------------------


class DataKeyWrappingInline(ReadOnlyInline):
    """Where a data key is wrapped. The wrapped bytes themselves are never shown."""

    model = DataKeyWrapping
    fields = ["region", "regional_key", "wrapped_size", "created_at", "retired_at"]
    readonly_fields = fields

    def has_view_permission(self, request, obj=None):
        # Part of the data key: whoever may look a data key up sees where it is wrapped.
        return request.user.has_perm("keys.view_datakey")

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


# --- Setup requests -------------------------------------------------------------------------


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
class SetupRequestAdmin(PermissionActionsMixin, ReadOnlyAdmin):
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

    def get_search_results(self, request, queryset, search_term):
        """Also by request ID: ``12`` or ``#12`` finds request #12 (within the filters)."""
        base = queryset
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        number = search_term.strip().lstrip("#")
        if number.isdigit() and len(number) < 19:
            queryset = queryset | base.filter(pk=int(number))
        return queryset, may_have_duplicates

    @admin.display(description="request", ordering="pk")
    def request_number(self, obj):
        return f"#{obj.pk}"

    @admin.display(description="location", ordering="location")
    def location_name(self, obj):
        return obj.get_location_display()

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="last preflight", ordering="_last_preflight")
    def last_preflight(self, obj):
        return getattr(obj, "_last_preflight", None)

    @admin.action(description="Run preflight", permissions=["run_preflight"])
    def run_preflight(self, request, queryset):
        from keys.preflight import PreflightNotAllowed, start_preflight

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


# --- Re-encryption (issue 6): read-only look-ups --------------------------------------------
# Fields are taken from the models as they are (only the ones that exist), so the admin follows
# the re-encryption models without listing each field twice.

HIDDEN_FIELDS = {"lease_token"}  # a worker's lease, meaningless to people


def _fields(model, wanted=None) -> list[str]:
    names = [
        f.name
        for f in model._meta.concrete_fields
        if not f.primary_key and f.name not in HIDDEN_FIELDS
    ]
    return [n for n in wanted if n in names] if wanted is not None else names


def _register_reencryption() -> None:
    from keys import models as key_models

    request_model = getattr(key_models, "ReencryptionRequest", None)
    if request_model is None:
        return
    job_model = getattr(key_models, "ReencryptionJob", None)
    preflight_model = getattr(key_models, "ReencryptionPreflight", None)
    event_model = getattr(key_models, "ReencryptionEvent", None)

    inlines = []
    for model, wanted in (
        (preflight_model, ["created_at", "status", "started_by", "finished_at", "checks"]),
        (event_model, ["created_at", "kind", "actor", "internal", "message"]),
    ):
        if model is not None:
            fields = _fields(model, wanted)
            inlines.append(
                type(
                    f"{model.__name__}Inline",
                    (ReadOnlyInline,),
                    {"model": model, "fields": fields, "readonly_fields": fields},
                )
            )

    class ReencryptionRequestAdmin(ReadOnlyAdmin):
        list_display = ["request_number", "organization", "status_badge", "assignee", "created_at"]
        list_filter = _fields(request_model, ["status", "mode"])
        search_fields = ["organization__name", "=connection__aws_account_id"]
        search_help_text = "Request ID (#12 or 12), organization name or AWS account ID (exact)."
        list_select_related = ["organization", "assignee"]
        date_hierarchy = "created_at"
        fields = _fields(request_model)
        readonly_fields = fields

        def get_search_results(self, request, queryset, search_term):
            base = queryset
            queryset, dup = super().get_search_results(request, queryset, search_term)
            number = search_term.strip().lstrip("#")
            if number.isdigit() and len(number) < 19:
                queryset = queryset | base.filter(pk=int(number))
            return queryset, dup

        @admin.display(description="request", ordering="pk")
        def request_number(self, obj):
            return f"#{obj.pk}"

        @admin.display(description="status", ordering="status")
        def status_badge(self, obj):
            return badge(obj.status, obj.get_status_display())

    ReencryptionRequestAdmin.inlines = inlines
    admin.site.register(request_model, ReencryptionRequestAdmin)

    if job_model is not None:

        class ReencryptionJobAdmin(ReadOnlyAdmin):
            list_display = ["__str__", "organization", "state_badge", "progress", "heartbeat"]
            list_filter = _fields(job_model, ["state", "phase", "mode"])
            search_fields = ["connection__organization__name", "=request__id"]
            list_select_related = ["connection__organization"]
            fields = _fields(job_model)
            readonly_fields = fields

            @admin.display(description="organization")
            def organization(self, obj):
                return obj.connection.organization

            @admin.display(description="state", ordering="state")
            def state_badge(self, obj):
                return badge(obj.state, obj.get_state_display())

            @admin.display(description="progress")
            def progress(self, obj):
                done, total = getattr(obj, "done", None), getattr(obj, "total", None)
                return f"{done} / {total}" if total else "—"

            @admin.display(description="last heartbeat")
            def heartbeat(self, obj):
                return getattr(obj, "heartbeat_at", None)

        admin.site.register(job_model, ReencryptionJobAdmin)


_register_reencryption()
