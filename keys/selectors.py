"""Tenant-scoped reads for BYOK connections, keys and requests."""

from keys.models import ByokConnection, SetupRequest


def connection_of(org) -> ByokConnection | None:
    return ByokConnection.objects.filter(organization=org).prefetch_related("keys").first()


def setup_requests_of(org):
    return SetupRequest.objects.filter(organization=org).select_related("requested_by", "assignee")


def staff_request_queue(*, status: str | None = None, location: str | None = None):
    qs = SetupRequest.objects.select_related("organization", "assignee").order_by("created_at")
    if status:
        qs = qs.filter(status=status)
    if location:
        qs = qs.filter(location=location)
    return qs
