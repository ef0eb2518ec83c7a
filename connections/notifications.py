"""Notices about an organization's key access (revocation, restore, the restore window)."""

from django.conf import settings
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.timesince import timeuntil

from connections.lifecycle import NOTICE_EXPIRED, NOTICE_REVOKED
from orgs.notices import absolute_url, org_admin_emails, send_notice


def connection_notice(*, connection, subject: str, body: str) -> int:
    """Tell the org's admins and the reps who worked with it about a key access change."""
    org = connection.organization
    recipients = org_admin_emails(org)
    # The reps who set the connection up (through the reverse relation: no import of setup).
    recipients += list(
        org.setup_requests.exclude(assignee=None).values_list("assignee__email", flat=True)
    )
    return send_notice(
        subject=f"{org}: {subject}",
        body=body + f"\nDetails: {absolute_url('connections:status', org_id=org.pk)}\n",
        recipients=recipients,
    )


def restore_window_notice(*, connection, notice: str, detail: str = "", now=None) -> int:
    """A notice of the restore window (``lifecycle``: revoked, the reminders, expired)."""
    days = settings.BYOK_RESTORE_WINDOW_DAYS
    deadline = connection.restore_deadline
    until = f"{date_format(deadline, 'j F Y H:i')} UTC" if deadline else "the deadline"
    if notice == NOTICE_REVOKED:
        subject = "key access revoked: BYOK apps are offline"
        body = (
            f"{detail}\nEvery BYOK app instance is suspended. Access can be restored within "
            f"{days} days, until {until}; after that the encrypted data is unrecoverable by "
            "design.\n"
        )
    elif notice == NOTICE_EXPIRED:
        subject = "restore window ended: the encrypted data is unrecoverable"
        body = (
            f"Key access was not restored within the {days}-day restore window (it ended "
            f"{until}). The data keys are being destroyed; the data encrypted under them can no "
            "longer be recovered.\n"
        )
    else:
        left = timeuntil(deadline, now or timezone.now()).replace("\xa0", " ") if deadline else ""
        subject = f"reminder: {left} left to restore key access"
        body = (
            f"Key access is still revoked and every BYOK app instance is offline. Restore it "
            f"before {until} ({left} left); after that the encrypted data is unrecoverable by "
            "design.\n"
            f"Restore: {absolute_url('connections:restore', org_id=connection.organization_id)}\n"
        )
    return connection_notice(connection=connection, subject=subject, body=body)


def scope_notice(*, connection, revocation, notice: str, detail: str = "", now=None) -> int:
    """A notice about one scoped revocation (revoked, reminders, restored, expired …)."""
    days = settings.BYOK_RESTORE_WINDOW_DAYS
    deadline = revocation.restore_deadline
    until = f"{date_format(deadline, 'j F Y H:i')} UTC" if deadline else "the deadline"
    scope = revocation.label
    if notice == NOTICE_REVOKED:
        subject = f"key access revoked for {scope}"
        body = (
            f"{detail}\nData of {scope} is refused; everything else keeps working. Access can be "
            f"restored within {days} days, until {until}; after that the data of this scope is "
            "unrecoverable by design.\n"
        )
    elif notice == NOTICE_EXPIRED:
        subject = f"restore window ended for {scope}: its data is unrecoverable"
        body = (
            f"Access to {scope} was not restored within the {days}-day restore window (it ended "
            f"{until}). Its data keys are destroyed.\n"
        )
    elif notice in ("restored", "restore-failed", "restore-timed-out"):
        subject = {
            "restored": f"key access restored for {scope}",
            "restore-failed": f"restore failed for {scope}",
            "restore-timed-out": f"restore check timed out for {scope}",
        }[notice]
        body = f"{detail}\n"
    else:
        left = timeuntil(deadline, now or timezone.now()).replace("\xa0", " ") if deadline else ""
        subject = f"reminder: {left} left to restore key access for {scope}"
        body = (
            f"Access to {scope} is still revoked. Restore it before {until} ({left} left); "
            "after that its data is unrecoverable by design.\n"
        )
    return connection_notice(connection=connection, subject=subject, body=body)
