"""Per-organization event counts by UTC hour and combination of the audit page's filter
columns (name, source, principal, key, region): ``EventVolume``, kept in the same transaction
as each event and read by the filtered chart (``audit.chart_counts``)."""

from __future__ import annotations

import hashlib
from datetime import UTC

from django.db import connection
from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import TruncHour

from audit.counts import hour_of
from audit.models import AuditEvent, EventVolume

#: The filter columns the rollup is keyed by, as AuditEvent field names.
DIMENSIONS = ("event_name", "event_source", "principal", "key_arn", "aws_region")


def dims_of(values: tuple[str, ...]) -> str:
    """The unique key of one combination: a digest, since the values can be long. MD5 because
    PostgreSQL computes the same one (``md5(concat_ws(chr(31), …))``) for bulk loads."""
    joined = "\x1f".join(values).encode("utf-8", "surrogatepass")
    return hashlib.md5(joined, usedforsecurity=False).hexdigest()


_UPSERT_SQL = (
    "INSERT INTO audit_eventvolume (organization_id, hour, dims, event_name, event_source, "
    "principal, key_arn, aws_region, total, errors) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (organization_id, hour, dims) DO UPDATE SET "
    "total = audit_eventvolume.total + EXCLUDED.total, "
    "errors = audit_eventvolume.errors + EXCLUDED.errors"
)


def count_volume(*, org_id: int, events) -> None:
    """Add ``events`` (AuditEvent objects of one org, just written) to their (hour,
    combination) rows: one upsert per row, in a fixed order (no deadlock between writers)."""
    rows: dict[tuple, list[int]] = {}
    for event in events:
        values = tuple(getattr(event, name) for name in DIMENSIONS)
        counted = rows.setdefault((hour_of(event.event_time), values), [0, 0])
        counted[0] += 1
        counted[1] += int(bool(event.error_code))
    params = [
        [org_id, connection.ops.adapt_datetimefield_value(hour), dims_of(values), *values, *n]
        for (hour, values), n in sorted(rows.items())
    ]
    if params:
        with connection.cursor() as cursor:
            cursor.executemany(_UPSERT_SQL, params)


def uncount_volume(events: QuerySet[AuditEvent]) -> None:
    """Subtract ``events`` (a queryset about to be purged) from their rows."""
    rows = (
        events.exclude(organization=None)
        .order_by()
        .annotate(bucket=TruncHour("event_time", tzinfo=UTC))
        .values("organization_id", "bucket", *DIMENSIONS)
        .annotate(total=Count("*"), errors=Count("id", filter=~Q(error_code="")))
    )
    for row in rows:
        counted = EventVolume.objects.filter(
            organization_id=row["organization_id"],
            hour=row["bucket"],
            dims=dims_of(tuple(row[name] for name in DIMENSIONS)),
        )
        counted.update(total=F("total") - row["total"], errors=F("errors") - row["errors"])
        counted.filter(total__lte=0).delete()
