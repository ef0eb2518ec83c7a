"""Tenant-scoped reads of audit events. Every query starts from the organization.

The view's ``org`` comes from ``org_admin_required`` (the orgs the user administers); nothing
here accepts an event or a query that is not already narrowed to that organization.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db.models import Count, Max, Min, Q, QuerySet, TextField
from django.db.models.functions import Cast, TruncDay, TruncHour
from django.shortcuts import get_object_or_404

from audit.chain import chain_name_for
from audit.filters import AuditFilters
from audit.models import AuditEvent, ChainHead


def events_of(org) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(organization=org).order_by("-event_time", "-id")


def _filtered(queryset: QuerySet[AuditEvent], filters: AuditFilters) -> QuerySet[AuditEvent]:
    """Exact matches only: each one is the second column of an (organization, …) index."""
    if filters.start is not None:
        queryset = queryset.filter(event_time__gte=filters.start)
    if filters.end is not None:
        queryset = queryset.filter(event_time__lte=filters.end)
    exact = {
        "event_name": filters.event_name,
        "event_source": filters.event_source,
        "principal": filters.principal,
        "key_arn": filters.resource,
        "aws_region": filters.region,
        "request_id": filters.request_id,
    }
    queryset = queryset.filter(**{field: value for field, value in exact.items() if value})
    if filters.errors_only:
        queryset = queryset.exclude(error_code="")
    return queryset


def search_events(*, org, filters: AuditFilters) -> QuerySet[AuditEvent]:
    """The org's events that match ``filters``, newest first (paginate with a keyset).

    The list shows the indexed columns only: the record (about 1 KB of JSON each) stays in
    the database until an event is opened or exported.
    """
    return _filtered(events_of(org), filters).defer("record")


def get_event(*, org, event_id) -> AuditEvent:
    """One event of the org by its ``eventID``; 404 for another org's event, as for none."""
    return get_object_or_404(AuditEvent, organization=org, event_id=event_id)


def event_volume(
    *, org, filters: AuditFilters, start: datetime, end: datetime, unit: str
) -> dict[datetime, tuple[int, int]]:
    """``{bucket start: (events, errors)}`` by ``unit`` ("hour" or "day"), in one query."""
    trunc = {"hour": TruncHour, "day": TruncDay}[unit]
    rows = (
        _filtered(AuditEvent.objects.filter(organization=org), filters)
        .filter(event_time__gte=start, event_time__lte=end)
        .order_by()
        .annotate(bucket=trunc("event_time", tzinfo=UTC))
        .values("bucket")
        .annotate(total=Count("*"), errors=Count("error_code", filter=~Q(error_code="")))
        .values_list("bucket", "total", "errors")
    )
    return {bucket: (total, errors) for bucket, total, errors in rows}


def export_span(*, org, filters: AuditFilters, up_to_sequence: int) -> tuple[int, int] | None:
    """The lowest and highest link of the org's chain an export holds; None if none match.

    ``up_to_sequence`` is the chain head when the export started: an export never grows while
    it streams. Unfiltered, that is the whole chain; filtered, one aggregate over the org's
    matching events, on the filter's own index.
    """
    if up_to_sequence <= 0:
        return None
    if not filters.is_active:
        return 1, up_to_sequence
    bounds = _filtered(
        AuditEvent.objects.filter(organization=org, sequence__lte=up_to_sequence), filters
    ).aggregate(first=Min("sequence"), last=Max("sequence"))
    if bounds["first"] is None:
        return None
    return bounds["first"], bounds["last"]


def export_events(*, org, filters: AuditFilters, first: int, last: int) -> QuerySet[AuditEvent]:
    """The org's matching events among links ``first``…``last`` of its hash chain.

    Scoped by the org's chain (``chain_name_for(org.pk)``), which holds that org's events and
    no other's: it lets the database walk the unique ``(chain, sequence)`` index in order,
    where an extra ``organization_id`` condition made PostgreSQL AND two bitmaps and re-sort
    the whole range for every batch (0.9 s instead of 25 ms per 2,000 rows).
    """
    queryset = AuditEvent.objects.filter(
        chain=chain_name_for(org.pk), sequence__gte=first, sequence__lte=last
    )
    return _filtered(queryset, filters)


def with_record_text(queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
    """Adds ``record_text``: the record as the database's JSON text (never decoded)."""
    return queryset.annotate(record_text=Cast("record", output_field=TextField()))


def chain_head_sequence(*, org) -> int:
    """The number of links in the org's chain right now (0 before its first event)."""
    head = ChainHead.objects.filter(chain=chain_name_for(org.pk)).values_list("sequence", flat=True)
    return head.first() or 0
