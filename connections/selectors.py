"""Tenant-scoped, read-only queries for the connection pages (no AWS call, no write)."""

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from connections.models import ByokConnection
from orgs.models import AppInstance


def connection_of(org) -> ByokConnection | None:
    return ByokConnection.objects.filter(organization=org).prefetch_related("keys").first()


def byok_apps_of(org):
    return (
        AppInstance.objects.filter(site__organization=org, encryption=AppInstance.Encryption.BYOK)
        .select_related("site", "data_health")
        .annotate(record_count=Count("records"))
        .order_by("site__name", "app")
    )


def byok_status_context(org) -> dict:
    # Read-only: the page shows the last read check (a beat task and the "Check now" button
    # run it) and when it ran; opening the page calls no AWS API and writes nothing.
    connection = connection_of(org)
    apps = list(byok_apps_of(org))
    return {
        "org": org,
        "connection": connection,
        "current_keys": [k for k in connection.keys.all() if k.is_current] if connection else [],
        "byok_apps": apps,
        "read_check_minutes": round(settings.READ_CHECK_INTERVAL_S / 60),
        "setup_requests": org.setup_requests.select_related("requested_by", "assignee")[:20],
    }


def revocation_context(connection: ByokConnection) -> dict:
    """What the revoke and restore pages show: state, deadline, per-region customer steps."""
    now = timezone.now()
    keys = [k for k in connection.keys.all() if k.is_current]
    seen = connection.customer_side or {}
    regions = [
        {
            "region": k.region,
            "key": k,
            "trust_denied": seen.get(k.region, {}).get("trust_denied", False),
            "key_disabled": seen.get(k.region, {}).get("key_disabled", False),
            "checked_at": seen.get(k.region, {}).get("checked_at"),
        }
        for k in keys
    ]
    deadline = connection.restore_deadline
    return {
        "connection": connection,
        "restore_days": settings.BYOK_RESTORE_WINDOW_DAYS,
        "regions": regions,
        "role_arn": connection.role_arn,
        "can_restore": connection.state == "revoked" and deadline is not None and deadline > now,
        "restore_in_progress": connection.state == "restoring",
        "window_closed": connection.state == "expired"
        or (connection.state == "revoked" and deadline is not None and deadline <= now),
    }
