"""E-mail notices to org admins and account reps. Called on commit, never inside a transaction.

Notices never contain key material, only what happened and where to look.
"""

import logging

from django.conf import settings
from django.core.mail import send_mail

from keys.models import SetupRequest
from orgs.models import Membership

log = logging.getLogger(__name__)


def org_admin_emails(org) -> list[str]:
    return list(
        Membership.objects.filter(
            organization=org, role=Membership.Role.ADMIN, user__is_active=True
        )
        .values_list("user__email", flat=True)
        .order_by("user__email")
    )


def rep_emails() -> list[str]:
    from orgs.models import User
    from orgs.staff_roles import ACCOUNT_REPS

    return list(
        User.objects.filter(groups__name=ACCOUNT_REPS, is_active=True)
        .values_list("email", flat=True)
        .order_by("email")
    )


def send_notice(*, subject: str, body: str, recipients: list[str]) -> int:
    recipients = sorted(set(filter(None, recipients)))
    if not recipients:
        return 0
    try:
        return send_mail(
            f"[BYOK] {subject}", body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False
        )
    except Exception:  # noqa: BLE001 — a mail outage must not undo a committed action
        log.exception("BYOK notice could not be sent: %s", subject)
        return 0


def request_submitted(request_id: int) -> None:
    req = SetupRequest.objects.select_related("organization").get(pk=request_id)
    send_notice(
        subject=f"New setup request #{req.pk} from {req.organization}",
        body=(
            f"{req.organization} asks for BYOK on site {req.site_name} "
            f"({req.location_info}), apps: {', '.join(req.apps)}.\n"
            "Claim it in the staff pages: /staff/requests/\n"
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
    send_notice(
        subject=subject,
        body=body + f"Details: /orgs/{req.organization_id}/byok/\n",
        recipients=recipients,
    )


def connection_notice(*, connection, subject: str, body: str) -> int:
    """Tell the org's admins and the reps who worked with it about a key access change."""
    org = connection.organization
    recipients = org_admin_emails(org)
    recipients += list(
        SetupRequest.objects.filter(organization=org)
        .exclude(assignee=None)
        .values_list("assignee__email", flat=True)
    )
    return send_notice(
        subject=f"{org}: {subject}",
        body=body + f"\nDetails: /orgs/{org.pk}/byok/\n",
        recipients=recipients,
    )
