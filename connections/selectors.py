"""Tenant-scoped, read-only queries for the connection pages (no AWS call, no write)."""

from django.conf import settings
from django.db.models import Count
from django.shortcuts import get_object_or_404
from django.utils import timezone

from connections.lifecycle import DEADLINES, RESTORE_WINDOW_STATES, deadline_of, state_flags
from connections.models import ByokConnection, ConnectionState, ScopedRevocation, ScopeKind
from connections.scope_lifecycle import BLOCKING_STATES, scope_flags
from orgs.models import AppInstance, Site
from orgs.selectors import orgs_administered_by


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
        **scope_context(org, apps),
        "org": org,
        "connection": connection,
        "current_keys": [k for k in connection.keys.all() if k.is_current] if connection else [],
        "byok_apps": apps,
        "read_check_minutes": round(settings.READ_CHECK_INTERVAL_S / 60),
        "lc": state_flags(connection),
        "restore_days": settings.BYOK_RESTORE_WINDOW_DAYS,
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
    flags = state_flags(connection, now)
    return {
        "connection": connection,
        "lc": flags,
        "restore_days": settings.BYOK_RESTORE_WINDOW_DAYS,
        "regions": regions,
        # IAM is global: the trust-policy step is one step, whatever the number of regions.
        "trust_denied": any(r["trust_denied"] for r in regions),
        "vendor_principal": settings.VENDOR_PRINCIPAL_ARN,
        "role_arn": connection.role_arn,
        "can_restore": flags["restorable"],
        "restore_in_progress": flags["restoring"],
        "restore_check_deadline": deadline_of(connection) if flags["restoring"] else None,
        "window_closed": flags["window_closed"],
    }


def revocation_banners(user) -> list[dict]:
    """The portal-wide banner: for an org admin, each of their orgs whose key access is revoked
    (restore window running), with the deadline. Nobody else sees it."""
    if user is None or not user.is_authenticated:
        return []
    connections = (
        ByokConnection.objects.filter(
            organization__in=orgs_administered_by(user),
            state__in=RESTORE_WINDOW_STATES,
            restore_deadline__isnull=False,
        )
        .select_related("organization")
        .order_by("restore_deadline")
    )
    return [
        {
            "org": c.organization,
            "state": c.get_state_display(),
            "restoring": c.state == ConnectionState.RESTORING,
            "restore_deadline": c.restore_deadline,
            "window": DEADLINES[ConnectionState.REVOKED].length,
        }
        for c in connections
    ]


def scoped_revocations_of(org):
    return (
        ScopedRevocation.objects.filter(organization=org)
        .select_related("site", "app_instance__site", "revoked_by")
        .order_by("-revoked_at")
    )


def revoked_scopes_of(org) -> dict[str, dict[int, int]]:
    """The sites and app instances of the org whose key access is revoked on its own:
    ``{"sites": {site id: revocation id}, "apps": {app instance id: revocation id}}``."""
    rows = ScopedRevocation.objects.filter(
        organization=org, state__in=BLOCKING_STATES, kind__in=(ScopeKind.SITE, ScopeKind.APP)
    ).values_list("pk", "kind", "site_id", "app_instance_id")
    revoked: dict[str, dict[int, int]] = {"sites": {}, "apps": {}}
    for pk, kind, site_id, app_id in rows:
        if kind == ScopeKind.SITE:
            revoked["sites"][site_id] = pk
        else:
            revoked["apps"][app_id] = pk
    return revoked


def get_scoped_revocation(org, revocation_id: int) -> ScopedRevocation:
    """The org's scoped revocation (another org's: 404, like one that does not exist)."""
    return get_object_or_404(scoped_revocations_of(org), pk=revocation_id)


def scope_context(org, apps) -> dict:
    """The BYOK page's per-site and per-app scope states, and the org's scoped revocations."""
    now = timezone.now()
    revocations = list(scoped_revocations_of(org)[:50])
    for revocation in revocations:
        revocation.flags = scope_flags(revocation, now)
    blocking = [r for r in revocations if r.state in BLOCKING_STATES]
    by_site = {r.site_id: r for r in blocking if r.kind == ScopeKind.SITE}
    by_app = {r.app_instance_id: r for r in blocking if r.kind == ScopeKind.APP}
    sites: dict[int, dict] = {}
    for app in apps:
        site = sites.setdefault(
            app.site_id, {"site": app.site, "revocation": by_site.get(app.site_id), "apps": []}
        )
        app.scope_revocation = by_app.get(app.pk)
        site["apps"].append(app)
    return {
        "byok_sites": list(sites.values()),
        "scoped_revocations": revocations,
        "period_revocations": [r for r in revocations if r.kind == ScopeKind.PERIOD],
    }


def get_site_of(org, site_id: int) -> Site:
    return get_object_or_404(Site, pk=site_id, organization=org)


def get_app_of(org, app_id: int) -> AppInstance:
    return get_object_or_404(
        AppInstance.objects.select_related("site"), pk=app_id, site__organization=org
    )
