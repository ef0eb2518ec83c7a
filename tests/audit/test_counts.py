"""The hourly event counts the chart and the vendor's calls per day read: always equal to a
COUNT(*) over the same events, at hour boundaries, across time zones, and after retention."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from freezegun import freeze_time

from audit import retention, selectors
from audit.filters import AuditFilters
from audit.models import AuditEvent, EventCount
from audit.services import record_event
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

H = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
KOLKATA = timezone(timedelta(hours=5, minutes=30))
NEW_YORK = timezone(timedelta(hours=-5))


def _at(org, when, *, kind=AuditEvent.Kind.PORTAL, error=""):
    with freeze_time(when):
        return record_event(org=org, event_name="Action", kind=kind, error_code=error)


def _live_counts(org) -> dict:
    """What the counts must equal: one aggregate over the events themselves."""
    rows = (
        AuditEvent.objects.filter(organization=org)
        .annotate(hour=TruncHour("event_time", tzinfo=UTC))
        .values("hour")
        .annotate(
            total=Count("*"),
            errors=Count("id", filter=~Q(error_code="")),
            key_usage=Count("id", filter=Q(kind=AuditEvent.Kind.KEY_USAGE)),
        )
    )
    return {r["hour"]: (r["total"], r["errors"], r["key_usage"]) for r in rows}


def _kept_counts(org) -> dict:
    return {
        c.hour: (c.total, c.errors, c.key_usage)
        for c in EventCount.objects.filter(organization=org)
    }


@pytest.fixture
def org_with_boundary_events():
    org = OrganizationFactory()
    moments = [
        H - timedelta(microseconds=1),  # the last instant of 09:00–10:00
        H,  # the first of 10:00–11:00
        H + timedelta(minutes=59, seconds=59),
        (H + timedelta(hours=1)).astimezone(KOLKATA),  # 16:30 in Kolkata is 11:00 UTC
        (H + timedelta(hours=1, minutes=30)).astimezone(NEW_YORK),
    ]
    for n, moment in enumerate(moments):
        _at(org, moment, kind=AuditEvent.Kind.KEY_USAGE if n % 2 else AuditEvent.Kind.PORTAL)
    _at(org, H + timedelta(minutes=5), error="AccessDenied")
    return org


def test_counts_equal_a_count_of_the_events_at_hour_boundaries_and_across_time_zones(
    org_with_boundary_events,
):
    org = org_with_boundary_events
    kept = _kept_counts(org)
    assert kept == _live_counts(org)
    assert kept == {
        H - timedelta(hours=1): (1, 0, 0),
        H: (3, 1, 1),
        H + timedelta(hours=1): (2, 0, 1),
    }


def test_the_unfiltered_chart_equals_the_filtered_path_over_the_same_range(
    org_with_boundary_events,
):
    org = org_with_boundary_events
    start, end = H - timedelta(hours=2), H + timedelta(hours=3)
    from_counts = selectors.event_volume(
        org=org, filters=AuditFilters(), start=start, end=end, unit="hour"
    )
    # Any active filter takes the aggregate over the events themselves.
    live = selectors.event_volume(
        org=org,
        filters=AuditFilters(errors_only=False, event_source="byok.portal.vendor.example"),
        start=start,
        end=end,
        unit="hour",
    )
    assert (
        from_counts
        == live
        == {
            H - timedelta(hours=1): (1, 0),
            H: (3, 1),
            H + timedelta(hours=1): (2, 0),
        }
    )


def test_another_orgs_events_are_never_counted_in_this_one(org_with_boundary_events):
    other = OrganizationFactory()
    _at(other, H)
    assert _kept_counts(org_with_boundary_events) == _live_counts(org_with_boundary_events)
    assert _kept_counts(other) == {H: (1, 0, 0)}


def test_retention_subtracts_what_it_purges(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    org = OrganizationFactory()
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    for minutes in (0, 10):
        _at(org, now - timedelta(days=40, minutes=minutes), kind=AuditEvent.Kind.KEY_USAGE)
    _at(org, now - timedelta(days=5))
    with freeze_time(now):
        retention.purge_expired_events(now=now)
    assert _kept_counts(org) == _live_counts(org)
    assert not any(hour < now - timedelta(days=30) for hour in _kept_counts(org))
