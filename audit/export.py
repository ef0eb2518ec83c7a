"""Streamed exports of an organization's audit events: CSV, and CloudTrail's JSON shape.

Both list the events in chain order (``sequence``, the order they were recorded in), which
is what the offline verifier walks (``audit/verify.py``); for events recorded as they happen
that is also time order, while events imported from the customer's CloudTrail sit where they
were imported.

Memory stays flat whatever the number of events: rows are read in keyset batches along the
org's chain (``chain = … AND sequence > last … ORDER BY sequence LIMIT n`` on the unique
``(chain, sequence)`` index: short queries, no server-side cursor or snapshot held open while
a slow client downloads, no ``OFFSET``), and each batch is written out before the next is
read. A filtered export first narrows the stretch of chain to read (the lowest and highest
matching link, from the filter's own index). The record is read as the database's JSON text,
so it is never decoded and re-encoded in Python.

The JSON export is ``{"Records": [...], "ChainName": ..., "Chain": [...], "Digests": [...],
"DigestSchedule": {...}}`` (docs/audit-format.md): ``Records`` are exactly the stored
CloudTrail records (what the ingestion reads back); ``Chain`` lists each exported record's
link (``eventID``, ``sequence``, ``prevHash``, ``hash``, ``hashFormat``) and its
``provenance`` in the same order, for offline verification (a filtered export has gaps by
design: ``--allow-gaps``); ``Digests`` are the signed chain-head digests within the exported
range; ``DigestSchedule`` says when the next digest is due, so the verifier can tell the
reader when the newest events will be vouched for. Both passes stop at the chain head as it
was when the export started, so they cover the same events even while new ones are recorded.
The provenance travels beside the record, never inside it: a record imported from the
customer's trail is kept exactly as their trail wrote it.
"""

from __future__ import annotations

import functools
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
from audit.provenance import provenance_label, provenance_of
from audit.services import record_event

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000
FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
CSV_COLUMNS = [
    "eventTime",
    "eventID",
    "kind",
    "provenance",
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
    """Lists of ``(sequence, *fields)`` rows in chain order, ``size`` at a time."""
    size = size or BATCH_SIZE
    after = 0
    while True:
        rows = list(
            queryset.filter(sequence__gt=after)
            .order_by("sequence")
            .values_list("sequence", *fields)[:size]
        )
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        after = rows[-1][0]


def _export_queryset(*, org, filters: AuditFilters, upper: int):
    """The export's rows, or None when nothing matches (computed once, as the stream starts)."""
    span = selectors.export_span(org=org, filters=filters, up_to_sequence=upper)
    if span is None:
        return None
    return selectors.export_events(org=org, filters=filters, first=span[0], last=span[1])


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
    yield ",".join(CSV_COLUMNS) + "\r\n"
    queryset = _export_queryset(org=org, filters=filters, upper=upper)
    if queryset is None:
        return
    fields = (
        "event_time",
        "event_id",
        "kind",
        "imported_from",
        "event_source",
        "event_name",
        "principal",
        "key_arn",
        "aws_region",
        "error_code",
        "request_id",
        "record_text",
    )
    # Computed once per (kind, file): an export repeats few of them.
    label = functools.cache(
        lambda kind, imported_from: provenance_label(kind=kind, imported_from=imported_from)
    )
    for rows in batches(selectors.with_record_text(queryset), fields):
        yield "".join(
            f"{_iso(time)},{event_id},{kind},{_cell(label(kind, imported_from))},"
            f"{_cell(source)},{_cell(name)},"
            f"{_cell(principal)},{_cell(key_arn)},{_cell(region)},{_cell(error)},"
            f"{_cell(request_id)},{sequence},{_quoted(record)}\r\n"
            for (
                sequence,
                time,
                event_id,
                kind,
                imported_from,
                source,
                name,
                principal,
                key_arn,
                region,
                error,
                request_id,
                record,
            ) in rows
        )


def json_chunks(*, org, filters: AuditFilters, upper: int) -> Iterator[str]:
    queryset = _export_queryset(org=org, filters=filters, upper=upper)
    first_sequence = last_sequence = None
    yield '{"Records":['
    separator = ""
    if queryset is not None:
        for rows in batches(selectors.with_record_text(queryset), ("record_text",)):
            if first_sequence is None:
                first_sequence = rows[0][0]
            last_sequence = rows[-1][0]
            yield separator + ",".join(record for _sequence, record in rows)
            separator = ","
    yield '],"ChainName":' + json.dumps(chain_name_for(org.pk)) + ',"Chain":['
    separator = ""
    if queryset is not None:
        provenance = functools.cache(
            lambda kind, imported_from: json.dumps(
                provenance_of(kind=kind, imported_from=imported_from), separators=(",", ":")
            )
        )
        fields = ("event_id", "prev_hash", "hash", "hash_format", "kind", "imported_from")
        for rows in batches(queryset, fields):
            yield separator + ",".join(
                f'{{"eventID":"{event_id}","sequence":{sequence},'
                f'"prevHash":"{prev_hash}","hash":"{digest}","hashFormat":{hash_format},'
                f'"provenance":{provenance(kind, imported_from)}}}'
                for sequence, event_id, prev_hash, digest, hash_format, kind, imported_from in rows
            )
            separator = ","
    digests = _digests(org=org, first=first_sequence, last=last_sequence)
    yield '],"Digests":' + json.dumps(digests, default=str)
    yield ',"DigestSchedule":' + json.dumps(_digest_schedule()) + "}"


def _digest_schedule() -> dict:
    """When the next digest is due (informational: the verifier tells the reader)."""
    unknown = {"intervalSeconds": None, "nextDigestAt": None}
    try:
        from audit.digests import digest_schedule
    except ImportError:
        return unknown
    try:
        return digest_schedule()
    except Exception:
        logger.exception("audit export: the digest schedule could not be read")
        return unknown


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
