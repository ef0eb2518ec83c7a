"""E-mail notices to org admins and account reps. Called on commit, never inside a transaction.

Notices never contain key material, only what happened and where to look. Links are built with
``reverse()`` on ``PORTAL_BASE_URL``, so they follow the URL configuration.
"""

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

from orgs.models import Membership, User
from orgs.staff_roles import ACCOUNT_REPS

log = logging.getLogger(__name__)


def absolute_url(viewname: str, **kwargs) -> str:
    """The portal's absolute URL of a named view (for e-mails, which have no request)."""
    return settings.PORTAL_BASE_URL.rstrip("/") + reverse(viewname, kwargs=kwargs or None)


def org_admin_emails(org) -> list[str]:
    return list(
        Membership.objects.filter(
            organization=org, role=Membership.Role.ADMIN, user__is_active=True
        )
        .values_list("user__email", flat=True)
        .order_by("user__email")
    )


def rep_emails() -> list[str]:
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
