"""Organizations, people, sites and app instances in the admin.

Support staff look up (view permissions only). Superusers may edit organizations and
memberships; each such change is written to the org's audit log with the superuser as
principal. Only superusers see or change who is staff, superuser or in which group.
"""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db import transaction
from django.db.models import Count, Exists, OuterRef
from django.utils.html import format_html
from django.utils.text import slugify
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.request_context import client_ip, user_agent
from audit.services import record_event
from orgs.models import AppInstance, Membership, Organization, Site, User

ADMIN_CSS = {"all": ["css/admin.css"]}
#: Fields of a user that decide what they may do as vendor staff: superusers only.
PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


def badge(value: str, label: str):
    return format_html('<span class="badge badge-{}">{}</span>', slugify(value), label)


def _audit(request, *, org, event_name: str, parameters: dict) -> None:
    record_event(
        org=org,
        actor=request.user,
        event_name=event_name,
        request_parameters=parameters,
        source_ip=client_ip(request),
        user_agent=user_agent(request),
        read_only=False,
    )


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = [
        "email",
        "full_name",
        "is_staff",
        "is_superuser",
        "is_active",
        "two_factor",
        "last_login",
    ]
    list_filter = ["is_staff", "is_superuser", "is_active", "groups"]
    search_fields = ["email", "full_name", "memberships__organization__name"]
    readonly_fields = ["last_login", "date_joined"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Profile", {"fields": ["full_name"]}),
        ("Access", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]
    filter_horizontal = ["groups"]

    def get_queryset(self, request):
        confirmed = TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)
        return super().get_queryset(request).annotate(_two_factor=Exists(confirmed))

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or request.user.is_superuser:
            return fieldsets
        # Look-ups need no password hash, not even the admin's masked summary of it.
        return [
            (name, {**opts, "fields": [f for f in opts["fields"] if f != "password"]})
            for name, opts in fieldsets
        ]

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += [f for f in PRIVILEGE_FIELDS if f not in readonly]
        return readonly

    @admin.display(description="two-factor", boolean=True, ordering="_two_factor")
    def two_factor(self, obj):
        return getattr(obj, "_two_factor", None)

    def has_delete_permission(self, request, obj=None):
        # People are referenced by audited records; deactivate (is_active) instead.
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


class SiteInline(admin.TabularInline):
    model = Site
    extra = 0
    show_change_link = True
    fields = ["name", "app_count", "created_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="app instances")
    def app_count(self, obj):
        return obj.app_instances.count()


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "plan", "cloud", "byok_state", "site_count", "created_at"]
    list_filter = ["plan", "cloud", "byok_connection__state"]
    search_fields = ["name", "sites__name", "=byok_connection__aws_account_id"]
    search_help_text = "Organization name, site or AWS account ID (exact)."
    list_select_related = ["byok_connection"]
    date_hierarchy = "created_at"
    inlines = [SiteInline, MembershipInline]

    class Media:
        css = ADMIN_CSS

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_site_count=Count("sites"))

    @admin.display(description="BYOK", ordering="byok_connection__state")
    def byok_state(self, obj):
        connection = getattr(obj, "byok_connection", None)
        if connection is None:
            return "—"
        return badge(connection.state, connection.get_state_display())

    @admin.display(description="sites", ordering="_site_count")
    def site_count(self, obj):
        return getattr(obj, "_site_count", None)

    def has_delete_permission(self, request, obj=None):
        return False  # an org's audit log, keys and requests refer to it

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if form.changed_data or not change:
                _audit(
                    request,
                    org=obj,
                    event_name="AdminUpdateOrganization" if change else "AdminCreateOrganization",
                    parameters={
                        name: str(form.cleaned_data.get(name)) for name in form.changed_data
                    },
                )

    def save_formset(self, request, form, formset, change):
        with transaction.atomic():
            super().save_formset(request, form, formset, change)
            if formset.model is not Membership:
                return
            org = form.instance
            for membership in formset.new_objects:
                _audit_membership(request, org, membership, "added")
            for membership, _fields in formset.changed_objects:
                _audit_membership(request, org, membership, "changed")
            for membership in formset.deleted_objects:
                _audit_membership(request, org, membership, "removed")


def _audit_membership(request, org, membership: Membership, what: str) -> None:
    _audit(
        request,
        org=org,
        event_name="AdminUpdateMembership",
        parameters={"userName": membership.user.email, "role": membership.role, "change": what},
    )


class AppInstanceInline(admin.TabularInline):
    model = AppInstance
    extra = 0
    fields = ["app", "encryption", "status", "status_reason", "updated_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "app_count", "created_at"]
    search_fields = ["name", "organization__name"]
    list_select_related = ["organization"]
    readonly_fields = ["organization", "name", "created_at"]
    inlines = [AppInstanceInline]
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_app_count=Count("app_instances"))

    @admin.display(description="app instances", ordering="_app_count")
    def app_count(self, obj):
        return getattr(obj, "_app_count", None)

    def has_add_permission(self, request):
        return False  # sites are created by provisioning, with their app instances

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AppInstance)
class AppInstanceAdmin(admin.ModelAdmin):
    list_display = ["__str__", "organization", "app", "encryption_badge", "status_badge"]
    list_filter = ["app", "encryption", "status"]
    search_fields = ["site__name", "site__organization__name"]
    search_help_text = "Site or organization name."
    list_select_related = ["site__organization"]
    # Encryption and status change only through services (provisioning, revoke, restore).
    readonly_fields = [
        "site",
        "app",
        "encryption",
        "status",
        "status_reason",
        "created_at",
        "updated_at",
    ]

    class Media:
        css = ADMIN_CSS

    @admin.display(description="organization", ordering="site__organization__name")
    def organization(self, obj):
        return obj.site.organization

    @admin.display(description="encryption", ordering="encryption")
    def encryption_badge(self, obj):
        return badge(obj.encryption, obj.get_encryption_display())

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status, obj.get_status_display())

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
