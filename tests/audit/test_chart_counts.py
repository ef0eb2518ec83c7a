"""The chart's counts for *filtered* ranges, read from the hourly rollups (``EventVolume``) and
the events of the range's partial edge hours: always equal to a COUNT(*) over the same events
and filters, whatever the range's edges (mid-hour, on the hour, in another time zone) and the
filter combination; kept exact by retention."""

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db.models import Count, Q
from django.db.models.functions import TruncDay, TruncHour
from django.urls import reverse
from freezegun import freeze_time

from audit import retention, selectors
from audit.filters import AuditFilters, filter_events
from audit.models import AuditEvent, EventVolume
from audit.services import record_event
from tests.factories import PASSWORD, OrganizationFactory, org_admin

pytestmark = pytest.mark.django_db

H = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
KOLKATA = timezone(timedelta(hours=5, minutes=30))
NEW_YORK = timezone(timedelta(hours=-5))
KEY_EAST = "arn:aws:kms:us-east-1:111122223333:key/1b4f2c6e-0000-4000-8000-00000000000e"
KEY_WEST = "arn:aws:kms:us-west-2:111122223333:key/1b4f2c6e-0000-4000-8000-00000000000w"
ROLE = "arn:aws:sts::111122223333:assumed-role/ByokPortalAccess/byok-portal"


def _key_usage(org, when, *, name, key, error="", request_id=""):
    region = key.split(":")[3]
    with freeze_time(when):
        return record_event(
            org=org,
            event_name=name,
            event_source="kms.amazonaws.com",
            kind=AuditEvent.Kind.KEY_USAGE,
            user_identity={"type": "AssumedRole", "arn": ROLE},
            aws_region=region,
            resources=[{"type": "AWS::KMS::Key", "ARN": key}],
            error_code=error,
            request_id=request_id,
        )


@pytest.fixture
def org():
    """Events of two kinds, two keys, with and without errors, on and around hour edges."""
    org = OrganizationFactory()
    moments = [
        H - timedelta(days=1, minutes=1),
        H - timedelta(microseconds=1),
        H,
        H + timedelta(minutes=30),
        (H + timedelta(hours=1)).astimezone(KOLKATA),
        (H + timedelta(hours=1, minutes=59, seconds=59)).astimezone(NEW_YORK),
        H + timedelta(hours=2),
        H + timedelta(hours=3) - timedelta(microseconds=1),  # the last instant of 12:00–13:00
        H + timedelta(days=1, hours=3),
    ]
    for n, moment in enumerate(moments):
        _key_usage(
            org,
            moment,
            name=("Decrypt", "GenerateDataKey")[n % 2],
            key=(KEY_EAST, KEY_WEST)[n % 3 == 0],
            error="AccessDeniedException" if n % 4 == 1 else "",
            request_id=f"req-{n}",
        )
    with freeze_time(H + timedelta(minutes=7)):
        record_event(org=org, event_name="Action")  # the portal's own event, no key
    return org


def _oracle(org, filters, start, end, unit) -> dict:
    """What the chart must show: one COUNT(*) over the events themselves."""
    trunc = {"hour": TruncHour, "day": TruncDay}[unit]
    rows = (
        filter_events(AuditEvent.objects.filter(organization=org), filters)
        .filter(event_time__gte=start, event_time__lte=end)
        .order_by()
        .annotate(bucket=trunc("event_time", tzinfo=UTC))
        .values("bucket")
        .annotate(total=Count("*"), errors=Count("id", filter=~Q(error_code="")))
    )
    return {r["bucket"]: (r["total"], r["errors"]) for r in rows}


FILTERS = [
    AuditFilters(),
    AuditFilters(event_name="Decrypt"),
    AuditFilters(resource=KEY_WEST),
    AuditFilters(region="us-east-1", errors_only=True),
    AuditFilters(errors_only=True),
    AuditFilters(event_source="kms.amazonaws.com", principal=ROLE),
    AuditFilters(event_source="byok.portal.vendor.example"),
    AuditFilters(event_name="GenerateDataKey", resource=KEY_EAST, errors_only=True),
    AuditFilters(request_id="req-3"),
    AuditFilters(event_name="NoSuchCall"),
]
EDGES = [
    H - timedelta(days=2),
    H - timedelta(minutes=1),
    H,
    (H + timedelta(minutes=30)).astimezone(KOLKATA),
    (H + timedelta(hours=1, minutes=59, seconds=59)).astimezone(NEW_YORK),
    H + timedelta(hours=2),
    H + timedelta(hours=3) - timedelta(microseconds=1),  # a range ending with a whole hour
    H + timedelta(days=2, seconds=1),
]


@pytest.mark.parametrize("unit", ["hour", "day"])
def test_the_chart_equals_a_count_of_the_events_for_every_filter_and_range(org, unit):
    checked = 0
    for filters, (start, end) in itertools.product(FILTERS, itertools.combinations(EDGES, 2)):
        chart = selectors.event_volume(org=org, filters=filters, start=start, end=end, unit=unit)
        assert chart == _oracle(org, filters, start, end, unit), (filters, start, end)
        checked += bool(chart)
    assert checked > 100  # most combinations hold events: the comparison is not vacuous


def test_the_rollup_holds_one_row_per_hour_and_combination(org):
    rows = EventVolume.objects.filter(organization=org, hour=H)
    assert {(r.event_name, r.key_arn, r.total, r.errors) for r in rows} == {
        ("GenerateDataKey", KEY_WEST, 1, 0),  # n=3 (KEY_WEST when n % 3 == 0)
        ("Decrypt", KEY_EAST, 1, 0),  # n=2
        ("Action", "", 1, 0),  # the portal's own event
    }


def test_another_orgs_events_are_never_in_this_ones_chart(org):
    other = OrganizationFactory()
    _key_usage(other, H, name="Decrypt", key=KEY_EAST)
    filters = AuditFilters(event_name="Decrypt")
    start, end = H - timedelta(days=2), H + timedelta(days=2)
    assert selectors.event_volume(
        org=other, filters=filters, start=start, end=end, unit="hour"
    ) == {H: (1, 0)}
    assert selectors.event_volume(
        org=org, filters=filters, start=start, end=end, unit="hour"
    ) == _oracle(org, filters, start, end, "hour")


def test_retention_subtracts_what_it_purges_from_the_rollup(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    org = OrganizationFactory()
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    for minutes in (0, 10):
        _key_usage(org, now - timedelta(days=40, minutes=minutes), name="Decrypt", key=KEY_EAST)
    _key_usage(org, now - timedelta(days=5), name="Decrypt", key=KEY_EAST)
    with freeze_time(now):
        retention.purge_expired_events(now=now)
    assert not EventVolume.objects.filter(organization=org, hour__lt=now - timedelta(days=30))
    filters = AuditFilters(resource=KEY_EAST)
    start, end = now - timedelta(days=60), now
    assert selectors.event_volume(
        org=org, filters=filters, start=start, end=end, unit="day"
    ) == _oracle(org, filters, start, end, "day")


def test_the_page_without_a_to_counts_the_current_hour_whole_as_the_list_shows_it(client):
    """An open range ends with its hour: an event stamped later in this hour (a trail record
    from a clock a little ahead) is in the list, so it is in the chart too."""
    org = OrganizationFactory()
    user = org_admin(org)
    assert client.login(username=user.email, password=PASSWORD)
    now = H + timedelta(minutes=20)
    _key_usage(org, H + timedelta(minutes=5), name="Decrypt", key=KEY_EAST, error="Throttling")
    _key_usage(org, H + timedelta(minutes=40), name="Decrypt", key=KEY_EAST)
    with freeze_time(now):
        response = client.get(reverse("audit:list", args=[org.pk]))
    html = response.content.decode()
    assert "<td>2026-11-30 10:00</td><td>2</td><td>1</td>" in html
    assert html.count('class="audit-error-row"') == 1 and "2 events, 1 error" in html


def test_an_imported_record_cannot_inject_markup_into_the_list_or_the_chart(client):
    org = OrganizationFactory()
    user = org_admin(org)
    assert client.login(username=user.email, password=PASSWORD)
    with freeze_time(H):
        record_event(
            org=org,
            event_name='Decrypt"><script>alert(1)</script>',
            event_source="kms.amazonaws.com",
            kind=AuditEvent.Kind.KEY_USAGE,
            user_identity={"type": "AssumedRole", "arn": "<img src=x onerror=alert(1)>"},
            resources=[{"type": "AWS::KMS::Key", "ARN": 'arn:aws:kms:x:1:key/"><b>'}],
            error_code="<svg/onload=alert(1)>",
        )
    with freeze_time(H + timedelta(minutes=1)):
        html = client.get(reverse("audit:list", args=[org.pk])).content.decode()
    for raw in ("<script>alert(1)", "<img src=x", '"><b>', "<svg/onload"):
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
