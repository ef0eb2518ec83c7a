"""Per-organization event counts by UTC hour, kept with the events themselves.

``record_event`` adds each event to its hour in the same transaction (under the chain head's
lock, so an org's counts move one event at a time); retention subtracts what it purges. The
chart of an unfiltered range and the vendor's calls per day read these rows: a range costs
its number of hours, whatever the number of events in it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate, TruncHour

from audit.models import AuditEvent, EventCount


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# The table is EventCount's (audit_eventcount): one upsert per hour, under the chain lock.
_COUNT_EVENTS_SQL = (
    "INSERT INTO audit_eventcount "
    "(organization_id, hour, total, errors, key_usage, confirmed, unexplained) "
    "VALUES (%s, %s, %s, %s, %s, 0, 0) ON CONFLICT (organization_id, hour) DO UPDATE SET "
    "total = audit_eventcount.total + EXCLUDED.total, "
    "errors = audit_eventcount.errors + EXCLUDED.errors, "
    "key_usage = audit_eventcount.key_usage + EXCLUDED.key_usage"
)


def count_events(*, org_id: int, events) -> None:
    """Add ``events`` — ``(event_time, error, key_usage)`` triples — to their hours: one upsert
    per hour, hours in order (PostgreSQL and SQLite alike)."""
    per_hour: dict[datetime, list[int]] = {}
    for event_time, error, key_usage in events:
        counted = per_hour.setdefault(hour_of(event_time), [0, 0, 0])
        counted[0] += 1
        counted[1] += int(bool(error))
        counted[2] += int(bool(key_usage))
    with connection.cursor() as cursor:
        for hour, (total, errors, key_usage) in sorted(per_hour.items()):
            adapted = connection.ops.adapt_datetimefield_value(hour)
            cursor.execute(_COUNT_EVENTS_SQL, [org_id, adapted, total, errors, key_usage])


_COUNT_MATCHES_SQL = (
    "INSERT INTO audit_eventcount "
    "(organization_id, hour, total, errors, key_usage, confirmed, unexplained) "
    "VALUES (%s, %s, 0, 0, 0, %s, %s) ON CONFLICT (organization_id, hour) DO UPDATE SET "
    "confirmed = audit_eventcount.confirmed + EXCLUDED.confirmed, "
    "unexplained = audit_eventcount.unexplained + EXCLUDED.unexplained"
)


def count_matches(*, org_id: int, matches, sign: int = 1) -> None:
    """Add (or, with ``sign=-1``, subtract) reconciliation matches to their hours: a confirmed
    call on the hour the portal recorded it, an unexplained one on its hour in the trail."""
    per_hour: dict[datetime, list[int]] = {}
    for recorded_at, call_time in matches:
        hour = hour_of(recorded_at or call_time)
        counted = per_hour.setdefault(hour, [0, 0])
        counted[0 if recorded_at else 1] += sign
    with connection.cursor() as cursor:
        for hour, (confirmed, unexplained) in sorted(per_hour.items()):
            adapted = connection.ops.adapt_datetimefield_value(hour)
            cursor.execute(_COUNT_MATCHES_SQL, [org_id, adapted, confirmed, unexplained])


def uncount_events(events) -> None:
    """Subtract ``events`` (a queryset about to be purged) from their hours."""
    rows = (
        events.exclude(organization=None)
        .order_by()
        .annotate(bucket=TruncHour("event_time", tzinfo=UTC))
        .values("organization_id", "bucket")
        .annotate(
            total=Count("*"),
            errors=Count("id", filter=~Q(error_code="")),
            key_usage=Count("id", filter=Q(kind=AuditEvent.Kind.KEY_USAGE)),
        )
    )
    for row in rows:
        counted = EventCount.objects.filter(
            organization_id=row["organization_id"], hour=row["bucket"]
        )
        counted.update(
            total=F("total") - row["total"],
            errors=F("errors") - row["errors"],
            key_usage=F("key_usage") - row["key_usage"],
        )
        counted.filter(total__lte=0, confirmed__lte=0, unexplained__lte=0).delete()


def hourly(*, org, start: datetime, end: datetime) -> dict[datetime, tuple[int, int, int]]:
    """``{hour: (events, errors, key-usage events)}`` for the hours from ``start`` to ``end``."""
    rows = EventCount.objects.filter(
        organization=org, hour__gte=hour_of(start), hour__lte=hour_of(end)
    ).values_list("hour", "total", "errors", "key_usage")
    return {hour: (total, errors, key_usage) for hour, total, errors, key_usage in rows}


def calls_by_day(*, org, start: datetime) -> dict:
    """``{UTC date: (key-usage events, confirmed, unexplained)}`` from ``start`` (midnight
    UTC) on: one aggregate over at most 24 rows a day."""
    rows = (
        EventCount.objects.filter(organization=org, hour__gte=hour_of(start))
        .filter(Q(key_usage__gt=0) | Q(confirmed__gt=0) | Q(unexplained__gt=0))
        .order_by()
        .annotate(day=TruncDate("hour", tzinfo=UTC))
        .values("day")
        .annotate(
            recorded=Sum("key_usage"), confirmed=Sum("confirmed"), unexplained=Sum("unexplained")
        )
        .values_list("day", "recorded", "confirmed", "unexplained")
    )
    return {
        day: (recorded, confirmed, unexplained) for day, recorded, confirmed, unexplained in rows
    }
