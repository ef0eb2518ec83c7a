from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from orgs.models import AppInstance, Membership, Organization, Site, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "is_staff", "is_superuser", "is_active", "last_login"]
    list_filter = ["is_staff", "is_superuser", "is_active", "groups"]
    search_fields = ["email", "full_name"]
    readonly_fields = ["last_login", "date_joined"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Profile", {"fields": ["full_name"]}),
        ("Access", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]
    filter_horizontal = ["groups"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


class SiteInline(admin.TabularInline):
    model = Site
    extra = 0
    show_change_link = True
    readonly_fields = ["name", "created_at"]
    can_delete = False


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "plan", "cloud", "created_at"]
    list_filter = ["plan", "cloud"]
    search_fields = ["name", "sites__name", "byok_connection__aws_account_id"]
    inlines = [SiteInline, MembershipInline]


class AppInstanceInline(admin.TabularInline):
    model = AppInstance
    extra = 0
    readonly_fields = ["app", "encryption", "status", "status_reason", "updated_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "created_at"]
    search_fields = ["name", "organization__name"]
    list_select_related = ["organization"]
    readonly_fields = ["organization", "name", "created_at"]
    inlines = [AppInstanceInline]


@admin.register(AppInstance)
class AppInstanceAdmin(admin.ModelAdmin):
    list_display = ["__str__", "site", "app", "encryption", "status", "updated_at"]
    list_filter = ["app", "encryption", "status"]
    search_fields = ["site__name", "site__organization__name"]
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
