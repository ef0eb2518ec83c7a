"""Notices about setup requests: to the reps when one arrives, to the admins when it closes."""

from orgs.notices import absolute_url, org_admin_emails, rep_emails, send_notice
from setup.models import SetupRequest


def request_submitted(request_id: int) -> None:
    req = SetupRequest.objects.select_related("organization").get(pk=request_id)
    send_notice(
        subject=f"New setup request #{req.pk} from {req.organization}",
        body=(
            f"{req.organization} asks for BYOK on site {req.site_name} "
            f"({req.location_info}), apps: {', '.join(req.apps)}.\n"
            f"Claim it in the staff pages: {absolute_url('review:queue')}\n"
        ),
        recipients=rep_emails(),
    )


def request_closed(request_id: int) -> None:
    req = SetupRequest.objects.select_related("organization", "assignee").get(pk=request_id)
    if req.status == SetupRequest.Status.PROVISIONED:
        subject = f"Your BYOK apps on {req.site_name} are being provisioned"
        body = (
            f"Setup request #{req.pk} was provisioned: {', '.join(req.apps)} on {req.site_name} "
            "now encrypt their data with the keys in your AWS account.\n"
        )
    else:
        subject = f"Your BYOK setup request #{req.pk} was rejected"
        body = f"Reason: {req.rejection_reason}\n"
    recipients = org_admin_emails(req.organization)
    if req.assignee:
        recipients.append(req.assignee.email)
    url = absolute_url("setup:request", org_id=req.organization_id, request_id=req.pk)
    send_notice(subject=subject, body=body + f"Details: {url}\n", recipients=recipients)
