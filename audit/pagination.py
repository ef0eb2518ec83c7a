"""Keyset pagination for audit events, and a paginator that never counts a huge table.

Audit events are listed newest first, ordered by ``(event_time, id)`` descending. A page is
found from the position of a row next to it, never by ``OFFSET``: page 1,000 costs what page 1
costs, and rows inserted while someone pages through the list neither repeat nor shift rows
between pages. Positions travel in links as opaque, signed cursors; a cursor that was changed
or that this server did not issue is refused with :class:`InvalidCursor`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core import signing
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Q, QuerySet
from django.utils.functional import cached_property

CURSOR_SALT = "audit.pagination.cursor.v1"
MAX_CURSOR_LENGTH = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class InvalidCursor(ValueError):
    """A page link that was altered, truncated or not issued by this server."""


@dataclass(frozen=True)
class Position:
    """Where a row sits in the ``(event_time, id)`` order."""

    event_time: datetime
    pk: int

    @classmethod
    def of(cls, event) -> Position:
        return cls(event.event_time, event.pk)


def encode_cursor(position: Position) -> str:
    micros = (position.event_time - _EPOCH) // _MICROSECOND
    return signing.dumps([micros, position.pk], salt=CURSOR_SALT)


def decode_cursor(token: str) -> Position:
    """The position a cursor names; :class:`InvalidCursor` for anything we did not issue."""
    if not token or len(token) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("The page link is not valid.")
    try:
        value = signing.loads(token, salt=CURSOR_SALT)
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise InvalidCursor("The page link is not valid.") from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(type(part) is int for part in value)
        or value[1] <= 0
    ):
        raise InvalidCursor("The page link is not valid.")
    try:
        event_time = _EPOCH + value[0] * _MICROSECOND
    except OverflowError as exc:
        raise InvalidCursor("The page link is not valid.") from exc
    return Position(event_time, value[1])


def older_than(position: Position) -> Q:
    # ``event_time <= t`` is implied by the OR; stated on its own it becomes an index bound, so
    # the scan starts at the cursor instead of filtering every newer row.
    return Q(event_time__lte=position.event_time) & (
        Q(event_time__lt=position.event_time)
        | Q(event_time=position.event_time, id__lt=position.pk)
    )


def newer_than(position: Position) -> Q:
    return Q(event_time__gte=position.event_time) & (
        Q(event_time__gt=position.event_time)
        | Q(event_time=position.event_time, id__gt=position.pk)
    )


@dataclass(frozen=True)
class KeysetPage:
    items: list
    has_newer: bool
    has_older: bool
    newer_cursor: str | None  # None with ``has_newer``: the newer page is the first page
    older_cursor: str | None

    @property
    def is_first(self) -> bool:
        return not self.has_newer


def keyset_page(
    queryset: QuerySet,
    *,
    size: int,
    after: Position | None = None,
    before: Position | None = None,
) -> KeysetPage:
    """One page of ``queryset`` (newest first): the first page, the rows older than ``after``
    (an "Older" link) or the rows newer than ``before`` (a "Newer" link)."""
    if before is not None:
        rows = list(queryset.filter(newer_than(before)).order_by("event_time", "id")[: size + 1])
        if len(rows) <= size:
            # Nothing newer beyond these: that is the first page, full, as it is now.
            return keyset_page(queryset, size=size)
        rows = rows[:size]
        rows.reverse()
        return KeysetPage(
            items=rows,
            has_newer=True,
            has_older=True,
            newer_cursor=encode_cursor(Position.of(rows[0])),
            older_cursor=encode_cursor(Position.of(rows[-1])),
        )
    if after is not None:
        queryset = queryset.filter(older_than(after))
    rows = list(queryset.order_by("-event_time", "-id")[: size + 1])
    has_older = len(rows) > size
    rows = rows[:size]
    return KeysetPage(
        items=rows,
        has_newer=after is not None,
        has_older=has_older,
        newer_cursor=encode_cursor(Position.of(rows[0])) if after is not None and rows else None,
        older_cursor=encode_cursor(Position.of(rows[-1])) if has_older else None,
    )


class EstimatedCountPaginator(Paginator):
    """A paginator for the admin on a table that grows without bound (audit events).

    On PostgreSQL it never counts more than ``count_cap`` rows: an unfiltered list takes the
    table's row estimate (``pg_class.reltuples``, kept by ANALYZE and autovacuum); a filtered
    list is counted exactly up to the cap (a ``LIMIT`` subquery), and beyond it takes the
    planner's estimate of the filtered query. Elsewhere (SQLite: small tables) it counts.
    Use it with ``show_full_result_count = False``.
    """

    count_cap = 1000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or connections[queryset.db].vendor != "postgresql":
            return super().count
        if not queryset.query.where:
            estimate = _table_estimate(queryset)
            if estimate is not None:
                return estimate
        exact = queryset[: self.count_cap + 1].count()
        if exact <= self.count_cap:
            return exact
        return max(exact, _planner_estimate(queryset))


def _table_estimate(queryset: QuerySet) -> int | None:
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    # -1 (never analysed) or 0: too young a table to trust the estimate; count it.
    return int(row[0]) if row is not None and row[0] > 0 else None


def _planner_estimate(queryset: QuerySet) -> int:
    sql, params = queryset.order_by().query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])
