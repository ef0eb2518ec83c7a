"""``django.contrib.admin`` with the portal's admin site as the default ``admin.site``."""

from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    default_site = "security.admin_site.PortalAdminSite"
