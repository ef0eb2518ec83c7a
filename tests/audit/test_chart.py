"""The event-volume chart: bucket choice, one aggregate query, stacked errors, accessible SVG."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from audit import selectors
from audit.chart import DAY, HOUR, MAX_DAYS, PLOT_H, TOP, build_chart, chart_window, nice_ceiling
from audit.filters import AuditFilters
from audit.services import record_event
from tests.factories import PASSWORD, OrganizationFactory, org_admin

NOW = datetime(2025, 5, 10, 15, 30, tzinfo=UTC)


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- window and buckets (pure) ----------------------------------------------------------------


def test_without_a_range_the_chart_shows_the_last_24_hours_by_hour():
    window = chart_window(start=None, end=None, now=NOW)
    assert window.unit == HOUR
    assert window.end == NOW
    assert window.start == at(2025, 5, 9, 16)  # whole hours: this one and the 23 before
    assert len(window.buckets()) == 24
    assert window.buckets()[-1] == at(2025, 5, 10, 15)


@pytest.mark.parametrize(
    ("span", "unit"),
    [
        (timedelta(hours=1), HOUR),
        (timedelta(days=1), HOUR),
        (timedelta(days=3), HOUR),
        (timedelta(days=3, minutes=1), DAY),
        (timedelta(days=60), DAY),
    ],
)
def test_bucket_size_follows_the_range_length(span, unit):
    assert chart_window(start=NOW - span, end=NOW, now=NOW).unit == unit


def test_hourly_buckets_cover_the_range_including_partial_hours():
    window = chart_window(start=at(2025, 5, 1, 10, 15), end=at(2025, 5, 1, 13, 5), now=NOW)
    assert window.buckets() == [at(2025, 5, 1, h) for h in (10, 11, 12, 13)]


def test_a_very_long_range_is_clipped_to_its_most_recent_days():
    window = chart_window(start=at(2020, 1, 1), end=NOW, now=NOW)
    assert window.clipped
    assert len(window.buckets()) == MAX_DAYS
    assert window.buckets()[-1] == at(2025, 5, 10)


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (11, 20), (480, 500)]
)
def test_y_axis_tops_out_at_a_round_number(value, ceiling):
    assert nice_ceiling(value) == ceiling


def test_errors_are_stacked_at_the_base_of_each_bar():
    window = chart_window(start=at(2025, 5, 1, 0), end=at(2025, 5, 1, 2, 59), now=NOW)
    chart = build_chart(
        window, {at(2025, 5, 1, 0): (10, 4), at(2025, 5, 1, 2): (5, 0)}
    )  # hour 1 has no events at all
    first, empty, last = chart.bars
    baseline = TOP + PLOT_H
    scale = PLOT_H / 10
    assert (first.events, first.errors, first.ok) == (10, 4, 6)
    assert first.error_height == pytest.approx(4 * scale, abs=0.01)
    assert first.error_y == pytest.approx(baseline - 4 * scale, abs=0.01)
    assert first.ok_height == pytest.approx(6 * scale, abs=0.01)
    assert first.ok_y + first.ok_height == pytest.approx(first.error_y, abs=0.02)
    assert (empty.events, empty.ok_height, empty.error_height) == (0, 0, 0)
    assert last.error_height == 0 and last.ok_height == pytest.approx(5 * scale, abs=0.01)
    assert (chart.events, chart.errors) == (15, 4)
    assert chart.busiest is first


def test_bars_sit_side_by_side_inside_the_plot():
    window = chart_window(start=None, end=None, now=NOW)
    chart = build_chart(window, {})
    xs = [bar.x for bar in chart.bars]
    assert xs == sorted(xs)
    assert chart.bars[-1].x + chart.bars[-1].width <= chart.right_edge
    assert chart.is_empty and chart.busiest is None


# --- the aggregate query ------------------------------------------------------------------


@pytest.mark.django_db
def test_volume_reads_the_whole_hours_in_one_query_and_the_partial_last_hour_in_another(
    django_assert_num_queries,
):
    org = OrganizationFactory()
    for minute, error in ((5, ""), (10, "AccessDenied"), (20, ""), (70, "DisabledException")):
        record_event(
            org=org,
            event_name="Decrypt",
            event_time=at(2025, 5, 1, 9, 0) + timedelta(minutes=minute),
            error_code=error,
        )
    record_event(org=OrganizationFactory(), event_name="Decrypt", event_time=at(2025, 5, 1, 9, 1))
    with django_assert_num_queries(2):  # 00:00–23:00 from the rollup, 23:00–23:59 from events
        volume = selectors.event_volume(
            org=org,
            filters=AuditFilters(),
            start=at(2025, 5, 1, 0),
            end=at(2025, 5, 1, 23, 59),
            unit=HOUR,
        )
    assert volume == {at(2025, 5, 1, 9): (3, 1), at(2025, 5, 1, 10): (1, 1)}


@pytest.mark.django_db
def test_volume_follows_the_filters_and_days():
    org = OrganizationFactory()
    record_event(org=org, event_name="Decrypt", event_time=at(2025, 5, 1, 9))
    record_event(org=org, event_name="Decrypt", event_time=at(2025, 5, 3, 23, 59))
    record_event(org=org, event_name="Encrypt", event_time=at(2025, 5, 3, 1))
    volume = selectors.event_volume(
        org=org,
        filters=AuditFilters(event_name="Decrypt"),
        start=at(2025, 4, 28),
        end=at(2025, 5, 5),
        unit=DAY,
    )
    assert volume == {at(2025, 5, 1): (1, 0), at(2025, 5, 3): (1, 0)}


# --- on the page ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_page_draws_the_chart_as_accessible_inline_svg(client):
    org = OrganizationFactory()
    user = org_admin(org)
    assert client.login(username=user.email, password=PASSWORD)
    record_event(org=org, event_name="Decrypt", event_time=at(2025, 5, 1, 9, 5))
    record_event(
        org=org, event_name="Decrypt", event_time=at(2025, 5, 1, 9, 6), error_code="AccessDenied"
    )
    response = client.get(
        reverse("audit:list", args=[org.pk]), {"from": "2025-05-01T08:00", "to": "2025-05-01T11:00"}
    )
    html = response.content.decode()
    svg = re.search(r"<svg.*?</svg>", html, re.S).group(0)
    assert 'role="img"' in svg and 'aria-labelledby="volume-title volume-desc"' in svg
    assert '<title id="volume-title">Audit events by hour' in svg
    assert "2 events, 1 of them error" in svg
    assert svg.count('class="chart-bar-ok"') == 1
    assert svg.count('class="chart-bar-error"') == 1
    assert "style=" not in svg
    assert "<script" not in svg
    # The same figures as a table, for screen readers and anyone who prefers numbers.
    assert "<td>2025-05-01 09:00</td><td>2</td><td>1</td>" in html
