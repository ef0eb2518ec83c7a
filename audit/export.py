"""Streamed exports of an organization's audit events: CSV, and CloudTrail's JSON shape.

Memory stays flat whatever the number of events: rows are read in keyset batches, oldest
first, on the same ``(organization, event_time, id)`` index as the list (``(event_time, id) >
last … LIMIT n``: short queries, no server-side cursor held open, no ``OFFSET``), and each
batch is written out before the next is read. The record is read as the database's JSON
text, so it is never decoded and re-encoded in Python.

The JSON export is ``{"Records": [...], "ChainName": ..., "Chain": [...], "Digests": [...]}``:
``Records`` are exactly the stored CloudTrail records (what the ingestion reads back), oldest
first like a CloudTrail log file; ``Chain`` lists each exported record's link (``eventID``,
``sequence``, ``prevHash``, ``hash``) in the same order, for offline verification (sort by
``sequence`` to walk the chain; a filtered export has gaps by design); ``Digests`` are the
signed chain-head digests covering the exported sequence range (``audit.digests``, when
installed). Both passes stop at the chain head as it was when the export started, so they
cover the same events even while new ones are recorded.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.text import slugify

from audit import selectors
from audit.chain import chain_name_for
from audit.filters import AuditFilters
from audit.models import AuditEvent
from audit.pagination import Position, newer_than
from audit.services import record_event

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000
FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
CSV_COLUMNS = [
    "eventTime",
    "eventID",
    "kind",
    "eventSource",
    "eventName",
    "principal",
    "resourceARN",
    "awsRegion",
    "errorCode",
    "requestID",
    "sequence",
    "record",
]
# Spreadsheets run cells that start with these as formulas (CSV injection); such cells get a
# leading apostrophe. The record column is JSON and always starts with "{".
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_NEEDS_QUOTES = re.compile(r'[",\r\n]')
_SPECIAL = re.compile(r'^[=+\-@\t\r]|[",\r\n]')


def batches(queryset, fields: tuple[str, ...], *, size: int | None = None) -> Iterator[list]:
    """Lists of ``(event_time, id, *fields)`` rows, oldest first, ``size`` at a time."""
    size = size or BATCH_SIZE
    position = None
    while True:
        page = queryset if position is None else queryset.filter(newer_than(position))
        rows = list(
            page.order_by("event_time", "id").values_list("event_time", "id", *fields)[:size]
        )
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        position = Position(rows[-1][0], rows[-1][1])


def export_filename(org, fmt: str, now: datetime) -> str:
    slug = slugify(org.name)[:40] or "org"
    return f"audit-{org.pk}-{slug}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.{fmt}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _cell(value: str) -> str:
    """One CSV field (RFC 4180), defused for spreadsheets."""
    if not _SPECIAL.search(value):
        return value  # the usual case: one regex scan
    if value.startswith(_FORMULA_PREFIXES):
        value = "'" + value
    if _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def csv_chunks(*, org, filters: AuditFilters, upper: int) -> Iterator[str]:
    """CSV lines built directly: the csv module's per-character quoting of the record JSON
    (about 1 KB, full of quotes) cost five times the rest of the export together."""
    queryset = selectors.with_record_text(
        selectors.export_events(org=org, filters=filters, up_to_sequence=upper)
    )
    fields = (
        "event_id",
        "kind",
        "event_source",
        "event_name",
        "principal",
        "key_arn",
        "aws_region",
        "error_code",
        "request_id",
        "sequence",
        "record_text",
    )
    yield ",".join(CSV_COLUMNS) + "\r\n"
    for rows in batches(queryset, fields):
        yield "".join(
            f"{_iso(time)},{event_id},{kind},{_cell(source)},{_cell(name)},"
            f"{_cell(principal)},{_cell(key_arn)},{_cell(region)},{_cell(error)},"
            f"{_cell(request_id)},{sequence},{_quoted(record)}\r\n"
            for (
                time,
                _pk,
                event_id,
                kind,
                source,
                name,
                principal,
                key_arn,
                region,
                error,
                request_id,
                sequence,
                record,
            ) in rows
        )


def json_chunks(*, org, filters: AuditFilters, upper: int) -> Iterator[str]:
    queryset = selectors.export_events(org=org, filters=filters, up_to_sequence=upper)
    first_sequence = last_sequence = None
    yield '{"Records":['
    separator = ""
    records = selectors.with_record_text(queryset)
    for rows in batches(records, ("sequence", "record_text")):
        sequences = [sequence for _time, _pk, sequence, _record in rows]
        low, high = min(sequences), max(sequences)
        first_sequence = low if first_sequence is None else min(first_sequence, low)
        last_sequence = high if last_sequence is None else max(last_sequence, high)
        yield separator + ",".join(record for _time, _pk, _sequence, record in rows)
        separator = ","
    yield '],"ChainName":' + json.dumps(chain_name_for(org.pk)) + ',"Chain":['
    separator = ""
    for rows in batches(queryset, ("event_id", "sequence", "prev_hash", "hash")):
        yield separator + ",".join(
            f'{{"eventID":"{event_id}","sequence":{sequence},'
            f'"prevHash":"{prev_hash}","hash":"{digest}"}}'
            for _time, _pk, event_id, sequence, prev_hash, digest in rows
        )
        separator = ","
    digests = _digests(org=org, first=first_sequence, last=last_sequence)
    yield '],"Digests":' + json.dumps(digests, default=str) + "}"


def _digests(*, org, first: int | None, last: int | None) -> list:
    """Signed digests covering links ``first``…``last``, if the digests module is installed."""
    try:
        from audit.digests import digests_for_export
    except ImportError:
        return []
    if first is None:
        return []
    try:
        return list(
            digests_for_export(org=org, events_first_sequence=first, events_last_sequence=last)
        )
    except Exception:
        # The records are already on their way: end the document well-formed. An export
        # without digests fails offline verification loudly, so nothing is silently trusted.
        logger.exception("audit export: digests for org %s failed", org.pk)
        return []


def export_response(
    *,
    org,
    filters: AuditFilters,
    fmt: str,
    actor=None,
    source_ip: str = "",
    user_agent: str = "",
    now: datetime | None = None,
) -> StreamingHttpResponse:
    """A streamed download of the org's events matching ``filters``; the export is audited."""
    now = now or timezone.now()
    # Fixed before anything else is written, so both JSON passes (and this export's own audit
    # event, recorded next) agree on which links the file holds.
    upper = selectors.chain_head_sequence(org=org)
    record_event(
        org=org,
        event_name="ExportAuditEvents",
        kind=AuditEvent.Kind.PORTAL,
        actor=actor,
        read_only=True,
        source_ip=source_ip,
        user_agent=user_agent or "byok-portal",
        request_parameters={"format": fmt, "filters": _describe(filters), "upToSequence": upper},
    )
    chunks = {"csv": csv_chunks, "json": json_chunks}[fmt](org=org, filters=filters, upper=upper)
    response = StreamingHttpResponse(chunks, content_type=FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="{export_filename(org, fmt, now)}"'
    response["Cache-Control"] = "no-store"
    return response


def _describe(filters: AuditFilters) -> dict:
    described = {}
    for name, value in vars(filters).items():
        if value in (None, "", False):
            continue
        described[name] = _iso(value) if isinstance(value, datetime) else value
    return described
