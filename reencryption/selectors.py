"""Tenant-scoped, read-only queries for re-encryption requests and their jobs."""

from django.db.models import Count, Q
from django.shortcuts import get_object_or_404
from django.urls import reverse

from reencryption.models import ReencryptionJob, ReencryptionRequest


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
        poll_url = reverse("reencryption:staff-progress", args=[req.pk])
    else:
        poll_url = reverse("reencryption:progress", args=[org.pk, req.pk])
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
        poll_url = reverse("reencryption:staff-preflight", args=[req.pk])
    else:
        poll_url = reverse("reencryption:preflight", args=[req.organization_id, req.pk])
    return {
        "preflight": preflight,
        "preflight_in_progress": preflight is not None
        and preflight.status in preflight.ACTIVE_STATUSES,
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
    from setup import onboarding

    location = connection.location_info
    kit = [
        {
            "region": region,
            "filename": onboarding.template_filename(
                location_code=connection.location, region=region, replacement=True
            ),
            "download_url": reverse("reencryption:template", args=[org.pk, region]),
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
