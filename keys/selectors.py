"""Reads for BYOK pages. Customer reads take the org the permission decorator resolved."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from keys.models import (
    ByokConnection,
    PreflightRun,
    ReencryptionJob,
    ReencryptionRequest,
    SetupRequest,
)
from orgs.models import AppInstance


def connection_of(org) -> ByokConnection | None:
    return ByokConnection.objects.filter(organization=org).prefetch_related("keys").first()


def setup_requests_of(org):
    return SetupRequest.objects.filter(organization=org).select_related("requested_by", "assignee")


def open_setup_requests_of(org):
    return setup_requests_of(org).filter(status__in=SetupRequest.OPEN_STATUSES)


def byok_apps_of(org):
    return (
        AppInstance.objects.filter(site__organization=org, encryption=AppInstance.Encryption.BYOK)
        .select_related("site", "data_health")
        .annotate(record_count=Count("records"))
        .order_by("site__name", "app")
    )


def byok_status_context(org) -> dict:
    from keys.dataplane import live_read_check

    connection = connection_of(org)
    apps = list(byok_apps_of(org))
    for app in apps:
        # A real read through the data plane, so the page shows what users would get now.
        app.live_check = live_read_check(app)
    return {
        "org": org,
        "connection": connection,
        "current_keys": [k for k in connection.keys.all() if k.is_current] if connection else [],
        "byok_apps": apps,
        "setup_requests": setup_requests_of(org)[:20],
    }


def request_context(req: SetupRequest, *, staff: bool) -> dict:
    timeline = req.timeline.select_related("actor")
    if not staff:
        timeline = timeline.filter(internal=False)
    preflight = req.preflights.select_related("started_by").first()
    org = req.organization
    if staff:
        poll_url = reverse("staff-request-preflight-fragment", args=[req.pk])
    else:
        poll_url = reverse("byok-request-preflight-fragment", args=[org.pk, req.pk])
    connection = ByokConnection.objects.filter(organization=org).first()
    return {
        "org": org,
        "req": req,
        "timeline": timeline,
        "preflight": preflight,
        "preflight_in_progress": preflight is not None
        and preflight.status in (PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING),
        "poll_url": poll_url,
        "connection": connection,
        "external_id": connection.external_id if connection else "",
        "staff": staff,
    }


def staff_request_queue(*, status: str = "", location: str = "", age: str = ""):
    qs = SetupRequest.objects.select_related("organization", "assignee", "requested_by").order_by(
        "created_at"
    )
    if status == "all":
        pass
    elif status:
        qs = qs.filter(status=status)
    else:
        qs = qs.filter(status__in=SetupRequest.OPEN_STATUSES)
    if location:
        qs = qs.filter(location=location)
    if age:
        qs = qs.filter(created_at__lte=timezone.now() - timedelta(days=int(age)))
    return qs


def staff_request_counts() -> dict[str, int]:
    return SetupRequest.objects.aggregate(
        submitted=Count("pk", filter=Q(status=SetupRequest.Status.SUBMITTED)),
        claimed=Count("pk", filter=Q(status=SetupRequest.Status.CLAIMED)),
        provisioned=Count("pk", filter=Q(status=SetupRequest.Status.PROVISIONED)),
        rejected=Count("pk", filter=Q(status=SetupRequest.Status.REJECTED)),
    )


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


# --- Re-encryption --------------------------------------------------------------------------


def reencryption_requests_of(org):
    return (
        ReencryptionRequest.objects.filter(organization=org)
        .select_related("requested_by", "assignee", "job")
        .order_by("-created_at")
    )


def reencryption_request_of(org, request_id: int):
    """One request of ``org``; another org's request is a 404, like a missing one."""
    return get_object_or_404(reencryption_requests_of(org), pk=request_id)


def open_reencryption_request_of(org):
    return (
        reencryption_requests_of(org).filter(status__in=ReencryptionRequest.OPEN_STATUSES).first()
    )


def _job_of(req):
    try:
        return req.job
    except ReencryptionJob.DoesNotExist:
        return None


def reencryption_progress_context(req, *, staff: bool) -> dict:
    job = _job_of(req)
    org = req.organization
    if staff:
        poll_url = reverse("staff-reencryption-progress", args=[req.pk])
    else:
        poll_url = reverse("byok-reencrypt-progress", args=[org.pk, req.pk])
    finished = job is None or job.state in job.FINISHED_STATES
    return {
        "org": org,
        "req": req,
        "job": job,
        "eta_text": _eta_text(job.eta_seconds) if job is not None else "",
        "progress_url": poll_url,
        # Keep polling while something can still change without a page load.
        "progress_done": finished and not (job is None and req.is_open),
        "staff": staff,
    }


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} min"
    return f"about {minutes / 60:.1f} h"


def reencryption_preflight_context(req, *, staff: bool) -> dict:
    preflight = req.preflights.select_related("started_by").first()
    if staff:
        poll_url = reverse("staff-reencryption-preflight", args=[req.pk])
    else:
        poll_url = reverse("byok-reencrypt-preflight", args=[req.organization_id, req.pk])
    return {
        "preflight": preflight,
        "preflight_in_progress": preflight is not None
        and preflight.status in (PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING),
        "preflight_poll_url": poll_url,
    }


def reencryption_context(req, *, staff: bool) -> dict:
    timeline = req.timeline.select_related("actor")
    if not staff:
        timeline = timeline.filter(internal=False)
    connection = req.connection
    return {
        **reencryption_progress_context(req, staff=staff),
        **reencryption_preflight_context(req, staff=staff),
        "timeline": timeline,
        "connection": connection,
        "regions": list(connection.location_info.regions),
        "keys": connection.keys.all().order_by("region", "-generation"),
    }


def reencrypt_page_context(org, connection) -> dict:
    """The admin's re-encryption page: the open request (if any), keys, history."""
    from keys import onboarding

    location = connection.location_info
    kit = [
        {
            "region": region,
            "filename": onboarding.template_filename(
                location_code=connection.location, region=region, replacement=True
            ),
            "download_url": reverse("byok-reencrypt-template", args=[org.pk, region]),
            "command": onboarding.deploy_command(
                location_code=connection.location, region=region, replacement=True
            ),
        }
        for region in location.regions
    ]
    return {
        "org": org,
        "connection": connection,
        "open_request": open_reencryption_request_of(org),
        "history": reencryption_requests_of(org)[:50],
        "keys": connection.keys.all().order_by("region", "-generation"),
        "kit": kit,
        "replacement_alias": onboarding.REPLACEMENT_KEY_ALIAS,
        "location": location,
    }


def staff_reencryption_queue(*, status: str = ""):
    qs = ReencryptionRequest.objects.select_related(
        "organization", "assignee", "requested_by", "job"
    ).order_by("created_at")
    if status == "all":
        return qs
    if status:
        return qs.filter(status=status)
    return qs.filter(status__in=ReencryptionRequest.OPEN_STATUSES)


def staff_reencryption_counts() -> dict[str, int]:
    S = ReencryptionRequest.Status
    return ReencryptionRequest.objects.aggregate(
        submitted=Count("pk", filter=Q(status=S.SUBMITTED)),
        claimed=Count("pk", filter=Q(status=S.CLAIMED)),
        approved=Count("pk", filter=Q(status=S.APPROVED)),
    )
