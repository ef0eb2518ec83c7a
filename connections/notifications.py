"""Notices about an organization's key access (revocation, restore, the restore window)."""

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
