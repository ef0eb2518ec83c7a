"""The event-volume chart's numbers, from hourly rollups instead of the events themselves.

Two rollups are kept with the events, in the same transaction: ``EventCount`` (per org and UTC
hour, ``audit.counts``) and ``EventVolume`` (per org, UTC hour and combination of the filter
columns, ``audit.volume``). A chart over a range reads the rollup rows of the range's *whole*
hours and the events of its partial first and last hours, so its counts equal a ``COUNT(*)``
over the same range and filters, at a cost of hours rather than events. Only a request-ID
filter (a handful of events, on its own index) counts the events directly.
"""

from __future__ import annotations

import functools
import itertools
import operator
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour

from audit.counts import hour_of
from audit.filters import AuditFilters, filter_events
from audit.models import AuditEvent, EventCount, EventVolume

HOUR = timedelta(hours=1)
_TICK = timedelta(microseconds=1)  # event times are stored to the microsecond


def end_of_hour(moment: datetime) -> datetime:
    """The last instant of ``moment``'s hour: a range ending there holds its hour whole."""
    return hour_of(moment) + HOUR - _TICK


#: AuditFilters field → EventVolume column.
FILTER_COLUMNS = {
    "event_name": "event_name",
    "event_source": "event_source",
    "principal": "principal",
    "resource": "key_arn",
    "region": "aws_region",
}


def event_volume(
    *, org, filters: AuditFilters, start: datetime, end: datetime, unit: str
) -> dict[datetime, tuple[int, int]]:
    """``{bucket start: (events, errors)}`` by ``unit`` ("hour" or "day", UTC) for the org's
    events from ``start`` to ``end`` (both included) that match ``filters``: at most two
    queries, the rollup's whole hours and the events of the partial edge hours."""
    if filters.request_id:  # a few events on the request-ID index: count them
        edges, whole = [(start, end)], []
    else:
        first_whole = start if start == hour_of(start) else hour_of(start) + HOUR
        stop_whole = hour_of(end) + HOUR if end == end_of_hour(end) else hour_of(end)
        if first_whole >= stop_whole:
            edges, whole = [(start, end)], []
        else:
            edges = [(start, first_whole - _TICK)] if start < first_whole else []
            if end >= stop_whole:
                edges.append((stop_whole, end))
            whole = _rollup(org, filters, first_whole, stop_whole, unit)
    buckets: dict[datetime, tuple[int, int]] = {}
    for bucket, total, errors in itertools.chain(whole, _events(org, filters, edges, unit)):
        if total:
            before = buckets.get(bucket, (0, 0))
            buckets[bucket] = (before[0] + total, before[1] + errors)
    return buckets


_TRUNC = {"hour": TruncHour, "day": TruncDay}


def _rollup(org, filters: AuditFilters, first: datetime, stop: datetime, unit: str):
    """``(bucket, events, errors)`` of the whole hours ``first`` ≤ hour < ``stop``."""
    columns = {FILTER_COLUMNS[name]: getattr(filters, name) for name in FILTER_COLUMNS}
    columns = {column: value for column, value in columns.items() if value}
    model = EventVolume if columns else EventCount
    rows = model.objects.filter(organization=org, hour__gte=first, hour__lt=stop, **columns)
    if filters.errors_only:
        rows = rows.filter(errors__gt=0)
    total = "errors" if filters.errors_only else "total"
    return (
        rows.order_by()
        .annotate(bucket=_TRUNC[unit]("hour", tzinfo=UTC))
        .values("bucket")
        .annotate(events=Sum(total), failed=Sum("errors"))
        .values_list("bucket", "events", "failed")
    )


def _events(org, filters: AuditFilters, ranges: list[tuple[datetime, datetime]], unit: str):
    """``(bucket, events, errors)`` counted from the events in ``ranges`` (one query)."""
    if not ranges:
        return []
    in_ranges = functools.reduce(
        operator.or_, (Q(event_time__gte=low, event_time__lte=high) for low, high in ranges)
    )
    return (
        filter_events(AuditEvent.objects.filter(organization=org), filters)
        .filter(in_ranges)
        .order_by()
        .annotate(bucket=_TRUNC[unit]("event_time", tzinfo=UTC))
        .values("bucket")
        .annotate(events=Count("*"), failed=Count("id", filter=~Q(error_code="")))
        .values_list("bucket", "events", "failed")
    )
