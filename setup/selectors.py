"""Tenant-scoped, read-only queries for setup requests (customer pages and the rep queue)."""

from datetime import timedelta

from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from connections.models import ByokConnection
from setup.models import SetupRequest


def setup_requests_of(org):
    return SetupRequest.objects.filter(organization=org).select_related("requested_by", "assignee")


def open_setup_requests_of(org):
    return setup_requests_of(org).filter(status__in=SetupRequest.OPEN_STATUSES)


def request_context(req: SetupRequest, *, staff: bool) -> dict:
    timeline = req.timeline.select_related("actor")
    if not staff:
        timeline = timeline.filter(internal=False)
    preflight = req.preflights.select_related("started_by").first()
    org = req.organization
    if staff:
        poll_url = reverse("setup:staff-preflight", args=[req.pk])
    else:
        poll_url = reverse("setup:request-preflight", args=[org.pk, req.pk])
    connection = ByokConnection.objects.filter(organization=org).first()
    return {
        "org": org,
        "req": req,
        "timeline": timeline,
        "preflight": preflight,
        "preflight_in_progress": preflight is not None
        and preflight.status in preflight.ACTIVE_STATUSES,
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
