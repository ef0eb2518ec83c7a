"""``make run``'s trail holds the vendor's real calls (moto's request IDs), so they show confirmed;
``demo_trail_unexplained_call`` adds a vendor-role call the portal never made: unexplained, and
the alert is raised (moto in-process, eager Celery)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from audit.models import AuditEvent, TrailCallMatch
from audit.selectors import unexplained_call_banners, vendor_calls_by_day
from dataplane import dek_cache
from demo import trail
from integrations.reconcile import UNEXPLAINED_EVENT
from orgs.models import Organization, User
from tests.support import login_verified

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(mock_aws, settings):
    settings.DEBUG = True
    dek_cache.purge_all()
    out = StringIO()
    call_command("seed_demo", stdout=out)
    yield out.getvalue()
    dek_cache.purge_all()


def acme() -> Organization:
    return Organization.objects.get(name="Acme Corp")


def test_after_the_seed_every_call_the_portal_made_is_confirmed_by_the_trail(seeded):
    org = acme()
    calls = AuditEvent.objects.filter(organization=org, kind=AuditEvent.Kind.KEY_USAGE)
    assert calls.count() > 5
    assert {"AssumeRole", "GenerateDataKey", "DescribeKey"} <= set(
        calls.values_list("event_name", flat=True)
    )
    confirmed = set(
        TrailCallMatch.objects.filter(organization=org, portal_event__isnull=False).values_list(
            "portal_event_id", flat=True
        )
    )
    assert confirmed == set(calls.values_list("pk", flat=True))
    assert not TrailCallMatch.objects.filter(portal_event__isnull=True).exists()
    assert not AuditEvent.objects.filter(event_name=UNEXPLAINED_EVENT).exists()
    assert "calls confirmed by it" in seeded
    from django.utils import timezone

    today = vendor_calls_by_day(org=org, now=timezone.now()).days[0]
    assert today.recorded == today.confirmed and today.awaiting == 0 and today.unexplained == 0


def test_a_second_seed_confirms_only_new_calls_and_flags_nothing(seeded):
    call_command("seed_demo", stdout=StringIO())
    assert not TrailCallMatch.objects.filter(portal_event__isnull=True).exists()
    matched = TrailCallMatch.objects.values_list("request_id", flat=True)
    assert len(matched) == len(set(matched))


def test_the_unexplained_call_command_raises_the_alert(
    seeded, client, mailoutbox, django_capture_on_commit_callbacks
):
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("demo_trail_unexplained_call", stdout=out)
    assert "unexplained" in out.getvalue()
    org = acme()
    [row] = TrailCallMatch.objects.filter(organization=org, portal_event__isnull=True)
    [alert] = AuditEvent.objects.filter(organization=org, event_name=UNEXPLAINED_EVENT)
    assert alert.record["requestParameters"]["requestID"] == row.request_id
    assert alert.record["requestParameters"]["sourceIPAddress"] == trail.UNEXPLAINED_CALL_IP
    assert [m.to for m in mailoutbox] == [["admin@acme.example"]]

    admin = User.objects.get(email="admin@acme.example")
    assert [b["count"] for b in unexplained_call_banners(admin)] == [1]
    login_verified(client, admin)
    page = client.get(reverse("audit:list", args=[org.pk])).content.decode()
    assert 'data-banner="unexplained-vendor-role-calls"' in page
    assert "1 unexplained call in the last 14 days" in page
    # Run again: a new call, a new alert (each is a different request).
    call_command("demo_trail_unexplained_call", stdout=StringIO())
    assert TrailCallMatch.objects.filter(portal_event__isnull=True).count() == 2


def test_the_unexplained_call_command_needs_debug(settings):
    from django.core.management.base import CommandError

    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG only"):
        call_command("demo_trail_unexplained_call", stdout=StringIO())
