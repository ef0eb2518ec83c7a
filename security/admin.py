"""Authenticator devices in the admin: who has one, never their secret.

django-otp's own TOTP admin shows and edits the secret key and serves its QR code; it is
replaced by a read-only list. A superuser may delete a device (a person lost their phone): the
person sets up a new one at their next sign-in, and the deletion is audited.
"""

from django.contrib import admin
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from security import admin_orgs  # noqa: F401  (registers the organizations' support admin)
from security.audit import record_account_event
from security.mfa import is_vendor_staff

if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_filter = ["confirmed"]
    search_fields = ["user__email"]
    list_select_related = ["user"]
    fields = [
        "user",
        "name",
        "confirmed",
        "created_at",
        "last_used_at",
        "throttling_failure_count",
        "throttling_failure_timestamp",
    ]
    readonly_fields = fields
    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return bool(request.user.is_superuser)

    def delete_model(self, request, obj):
        with transaction.atomic():
            _audit_removal(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for device in queryset.select_related("user"):
                _audit_removal(request, device)
            super().delete_queryset(request, queryset)


def _audit_removal(request, device: TOTPDevice) -> None:
    """In the person's own chains (their org admins see it). A vendor staff member's device is
    audited in the vendor chain by ``security.staff_audit`` wherever it is deleted."""
    if is_vendor_staff(device.user):
        return
    record_account_event(
        event_name="DeactivateMFADevice",
        user=device.user,
        request=request,
        identity={
            "type": "VendorStaff",
            "principalId": f"user:{request.user.pk}",
            "userName": request.user.email,
        },
        parameters={"userName": device.user.email, "deviceName": device.name},
    )
