"""Failed sign-ins reach the audit log as one counted event per address and window, never one
event per attempt: a stranger who knows an admin's e-mail address cannot flood the org's log
or its SIEM feed, and every failure is still accounted for."""

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from freezegun import freeze_time

from audit.models import AuditEvent
from security import failed_sign_ins
from security.models import FailureTally
from security.tasks import report_closed_failure_windows
from tests.factories import PASSWORD, MembershipFactory, OrganizationFactory, org_admin

pytestmark = pytest.mark.django_db

WINDOW_S = 300
#: The start of a window (aligned to WINDOW_S).
T0 = datetime(2026, 5, 4, 10, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def window(settings):
    settings.SIGN_IN_FAILURE_WINDOW_S = WINDOW_S


def fail(client, email, *, at, ip="198.51.100.7", password="wrong-guess-123"):
    with freeze_time(at):
        return client.post(
            reverse("login"), {"username": email, "password": password}, REMOTE_ADDR=ip
        )


def failures(**filters):
    return AuditEvent.objects.filter(event_name="ConsoleLogin", error_code__gt="", **filters)


def counted(events) -> int:
    return sum(e.record["requestParameters"]["failureCount"] for e in events)


def test_fifty_failures_make_at_most_one_event_per_org_and_window_with_the_right_count(client):
    org, other_org = OrganizationFactory(), OrganizationFactory()
    user = org_admin(org)
    MembershipFactory(user=user, organization=other_org)
    statuses = {
        fail(client, user.email, at=T0 + timedelta(seconds=i)).status_code for i in range(50)
    }
    assert statuses == {200, 429}  # locked out after five; the lock is still counted

    for each in (org, other_org):
        events = list(failures(organization=each))
        assert len(events) == 1, "the first failure at once, the other 49 only counted"
        assert events[0].record["requestParameters"]["failureCount"] == 1

    with freeze_time(T0 + timedelta(seconds=WINDOW_S + 30)):
        assert report_closed_failure_windows() == 1

    for each in (org, other_org):
        events = list(failures(organization=each).order_by("sequence"))
        times = [failed_sign_ins.window_start(e.event_time) for e in events]
        assert len(times) == len(set(times)) == 2, "one event per window"
        assert counted(events) == 50
        closing = events[1].record
        assert closing["requestParameters"]["failureCount"] == 49
        assert closing["requestParameters"]["lockedOutCount"] == 46  # the 5th locked, 45 refused
        assert closing["errorCode"] == "AccountLocked"
        assert closing["sourceIPAddress"] == "198.51.100.7"
        assert "wrong-guess-123" not in str(closing)
    assert not failures(organization__isnull=True).exists()


def test_the_next_failure_after_the_window_writes_the_count_at_once(client):
    org = OrganizationFactory()
    user = org_admin(org)
    for i in range(3):
        fail(client, user.email, at=T0 + timedelta(seconds=i))
    fail(client, user.email, at=T0 + timedelta(seconds=WINDOW_S + 1))
    events = list(failures(organization=org).order_by("sequence"))
    assert [e.record["requestParameters"]["failureCount"] for e in events] == [1, 3]
    with freeze_time(T0 + timedelta(seconds=WINDOW_S + 2)):
        assert report_closed_failure_windows() == 0  # that window has its event already


def test_failures_spread_over_windows_are_each_counted_once(client):
    org = OrganizationFactory()
    user = org_admin(org)
    # Two failures every minute for 20 minutes, from rotating addresses (no lockout per pair).
    for minute in range(20):
        for second in (5, 35):
            at = T0 + timedelta(minutes=minute, seconds=second)
            fail(client, user.email, at=at, ip=f"203.0.113.{minute}")
        with freeze_time(T0 + timedelta(minutes=minute, seconds=50)):
            report_closed_failure_windows()
    with freeze_time(T0 + timedelta(minutes=30)):
        report_closed_failure_windows()
    events = list(failures(organization=org))
    windows = [failed_sign_ins.window_start(e.event_time) for e in events]
    assert len(windows) == len(set(windows)) <= 20 * 60 // WINDOW_S + 1
    assert counted(events) == 40


def test_unknown_addresses_are_counted_in_the_vendor_chain(client):
    for i in range(10):
        fail(client, "Nobody@Example.com", at=T0 + timedelta(seconds=i))
    with freeze_time(T0 + timedelta(seconds=WINDOW_S)):
        report_closed_failure_windows()
    events = list(failures().order_by("sequence"))
    assert {e.organization_id for e in events} == {None}
    assert {e.principal for e in events} == {"nobody@example.com"}
    assert counted(events) == 10


def test_the_beat_writes_nothing_for_a_quiet_window_and_forgets_old_tallies(client):
    user = org_admin()
    fail(client, user.email, at=T0)
    with freeze_time(T0 + timedelta(seconds=WINDOW_S + 1)):
        assert report_closed_failure_windows() == 0  # one failure: already written
    with freeze_time(T0 + timedelta(days=2)):
        report_closed_failure_windows()
    assert not FailureTally.objects.exists()
    assert failures().count() == 1


def test_a_right_password_still_signs_in_and_is_recorded_as_such(client):
    org = OrganizationFactory()
    user = org_admin(org)
    fail(client, user.email, at=T0)
    with freeze_time(T0 + timedelta(seconds=2)):
        response = client.post(
            reverse("login"), {"username": user.email, "password": PASSWORD}, REMOTE_ADDR="::1"
        )
    assert response.status_code == 302
    assert AuditEvent.objects.filter(
        organization=org, event_name="ConsoleLogin", error_code=""
    ).exists()
