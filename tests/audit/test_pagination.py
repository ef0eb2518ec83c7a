"""Keyset pagination: signed cursors, (event_time, id) order, and the admin's estimating count."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core import signing

from audit import selectors
from audit.models import AuditEvent
from audit.pagination import (
    CURSOR_SALT,
    EstimatedCountPaginator,
    InvalidCursor,
    Position,
    decode_cursor,
    encode_cursor,
    keyset_page,
)
from audit.services import record_event
from tests.factories import OrganizationFactory

T0 = datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_cursor_round_trips_to_the_microsecond():
    position = Position(T0, 42)
    assert decode_cursor(encode_cursor(position)) == position


def test_cursor_is_opaque_and_signed():
    token = encode_cursor(Position(T0, 42))
    assert "2025" not in token and "42" not in token.split(":")[0][-4:]
    forged = signing.dumps([0, 1], salt="some.other.salt")
    with pytest.raises(InvalidCursor):
        decode_cursor(forged)


@pytest.mark.parametrize(
    "value",
    [
        "not a list",
        [1],
        [1, 2, 3],
        ["1", 2],
        [1, 0],
        [1, -5],
        [1.5, 2],
        [True, 2],
        [10**20, 1],  # past year 9999
    ],
)
def test_signed_but_malformed_cursor_is_refused(value):
    with pytest.raises(InvalidCursor):
        decode_cursor(signing.dumps(value, salt=CURSOR_SALT))


@pytest.mark.parametrize("token", ["", "x", "a" * 201, "eyJ:abc", "::::"])
def test_garbage_cursor_is_refused(token):
    with pytest.raises(InvalidCursor):
        decode_cursor(token)


@pytest.mark.django_db
def test_pages_walk_the_org_in_order_and_back():
    org = OrganizationFactory()
    events = [
        record_event(org=org, event_name=f"E{i}", event_time=T0 + timedelta(seconds=i // 2))
        for i in range(7)
    ]  # pairs share a timestamp: the id breaks the tie
    newest_first = [e.pk for e in reversed(events)]
    queryset = selectors.events_of(org)

    page1 = keyset_page(queryset, size=3)
    page2 = keyset_page(queryset, size=3, after=decode_cursor(page1.older_cursor))
    page3 = keyset_page(queryset, size=3, after=decode_cursor(page2.older_cursor))
    assert [e.pk for e in page1.items + page2.items + page3.items] == newest_first
    assert (page1.has_newer, page1.has_older) == (False, True)
    assert (page3.has_newer, page3.has_older, page3.older_cursor) == (True, False, None)

    back = keyset_page(queryset, size=3, before=decode_cursor(page3.newer_cursor))
    assert [e.pk for e in back.items] == [e.pk for e in page2.items]
    first_again = keyset_page(queryset, size=3, before=decode_cursor(back.newer_cursor))
    assert [e.pk for e in first_again.items] == [e.pk for e in page1.items]
    assert first_again.is_first


@pytest.mark.django_db
def test_newer_link_at_the_top_gives_a_full_first_page():
    org = OrganizationFactory()
    events = [
        record_event(org=org, event_name=f"E{i}", event_time=T0 + timedelta(i)) for i in range(5)
    ]
    queryset = selectors.events_of(org)
    # "Newer" from a page whose first row is the second-newest event: one row is newer.
    page = keyset_page(queryset, size=3, before=Position.of(events[3]))
    assert page.is_first
    assert [e.pk for e in page.items] == [events[4].pk, events[3].pk, events[2].pk]


@pytest.mark.django_db
def test_older_page_past_the_end_is_empty_and_links_back():
    org = OrganizationFactory()
    oldest = record_event(org=org, event_name="E", event_time=T0)
    page = keyset_page(selectors.events_of(org), size=3, after=Position.of(oldest))
    assert page.items == []
    assert page.has_newer and page.newer_cursor is None  # the newer page is the first page
    assert not page.has_older


@pytest.mark.django_db
def test_keyset_queries_use_no_offset():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    org = OrganizationFactory()
    events = [record_event(org=org, event_name="E", event_time=T0 + timedelta(i)) for i in range(4)]
    with CaptureQueriesContext(connection) as queries:
        keyset_page(selectors.events_of(org), size=2, after=Position.of(events[2]))
    sql = queries.captured_queries[0]["sql"].upper()
    assert "OFFSET" not in sql
    assert "COUNT(" not in sql


# --- the admin's paginator -------------------------------------------------------------------


@pytest.mark.django_db
def test_estimating_paginator_counts_exactly_where_tables_are_small():
    """On SQLite (the embedded default) it counts; on PostgreSQL see bench/audit.py."""
    org = OrganizationFactory()
    for i in range(5):
        record_event(org=org, event_name="E", event_time=T0 + timedelta(i))
    filtered = AuditEvent.objects.filter(organization=org).order_by("-id")
    assert EstimatedCountPaginator(filtered, 2).count == 5
    assert EstimatedCountPaginator(filtered, 2).num_pages == 3
    assert EstimatedCountPaginator(list(range(7)), 2).count == 7
