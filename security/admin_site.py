"""The portal's Django admin site: vendor staff only, two-factor verified, one sign-in page.

- ``has_permission`` wants an active staff user whose session passed a one-time code (like
  django-otp's ``OTPAdminSite``), so the admin stays closed even without the middleware.
- ``/admin/login/`` does not offer a second password form: anonymous visitors go to the portal's
  sign-in (throttled by django-axes, followed by the two-factor step), and a signed-in customer
  gets 403 (the admin is for vendor staff), never a redirect loop.
"""

from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse

from security.mfa import is_vendor_staff, is_verified, safe_next


class PortalAdminSite(admin.AdminSite):
    site_header = "BYOK Portal administration"
    site_title = "BYOK Portal admin"
    index_title = "Support look-ups"

    def has_permission(self, request) -> bool:
        user = request.user
        return bool(user.is_active and user.is_staff and is_verified(user))

    def login(self, request, extra_context=None):
        user = request.user
        next_url = safe_next(request, default=reverse("admin:index", current_app=self.name))
        if user.is_authenticated and not is_vendor_staff(user):
            raise PermissionDenied("The admin is for vendor staff.")
        if user.is_authenticated and self.has_permission(request):
            return redirect(next_url)
        # Anonymous, or staff still owing the second factor (the middleware sends them there).
        return redirect(f"{reverse('login')}?{urlencode({'next': next_url})}")
