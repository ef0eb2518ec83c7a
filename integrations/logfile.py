"""One CloudTrail log file: bytes in, validated records out, or the reason it is malformed.

The file comes from the customer's bucket, so anyone who can write there chooses its bytes. The
parser is total: whatever the bytes (gzip bombs, truncated gzip, deep nesting, dates past the
calendar, NaN, the NUL character, lone surrogates, records of the wrong shape), it returns
records that ``record_event`` stores and hashes as they are, or raises
:class:`MalformedLogFile` with a reason an org admin can read. Nothing else escapes, so one
bad file never stops an org's ingestion.

Memory stays proportional to the size limit: the decompressed size is capped before anything
is parsed, and a file whose text holds more JSON values than real log files of that size do is
refused before ``json.loads`` turns it into Python objects.

:func:`portal_claim` names a record that claims to be the portal's own (its event source or
one of its identities): ingestion refuses those, so an imported record never passes for a
vendor action.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import re
import unicodedata
import uuid
import zlib
from datetime import UTC, datetime

from django.conf import settings

from audit.canonical import unstorable_reason
from audit.services import PORTAL_EVENT_SOURCE, PORTAL_USER_AGENT

#: More records than this in one file is not a CloudTrail log file (CloudTrail writes a file
#: per region every few minutes); importing them would hold the org's chain for minutes.
MAX_RECORDS = 250_000
#: Real CloudTrail JSON has about one value per 25 bytes; refusing files denser than one per
#: 8 bytes caps the Python objects a file of the size limit can become.
BYTES_PER_VALUE = 8


class MalformedLogFile(Exception):
    """The file is not a CloudTrail log file the portal can import; the message says why."""


def parse_log_file(data: bytes, *, max_bytes: int | None = None) -> list[dict]:
    """The records of a CloudTrail log file (gzip or plain JSON), validated.

    Raises :class:`MalformedLogFile` naming the first problem: not gzip, too large, not JSON,
    no ``Records`` list, too many values or records, or a record that cannot be imported as
    it is (no usable ``eventID``/``eventTime``, a field of the wrong type, a value that cannot
    be stored and hashed faithfully).
    """
    limit = max_bytes or settings.AUDIT_INGEST_MAX_FILE_BYTES
    document = _json_document(_decompressed(data, limit), limit)
    records = document.get("Records") if isinstance(document, dict) else None
    if not isinstance(records, list):
        raise MalformedLogFile('Not a CloudTrail log file: no "Records" list.')
    if len(records) > MAX_RECORDS:
        raise MalformedLogFile(
            f"{len(records):,} records: the portal imports log files of up to "
            f"{MAX_RECORDS:,} records."
        )
    for index, record in enumerate(records, start=1):
        problem = record_problem(record)
        if problem:
            raise MalformedLogFile(f"Record {index}: {problem}.")
    return records


def _decompressed(data: bytes, limit: int) -> bytes:
    if data[:2] != b"\x1f\x8b":
        if len(data) > limit:
            raise MalformedLogFile(f"Larger than {limit} bytes.")
        return data
    try:
        # Reads at most limit + 1 bytes of output, however small the input: a bomb stops here.
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            text = stream.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise MalformedLogFile(f"Not a valid gzip file ({_short(exc)}).") from exc
    if len(text) > limit:
        raise MalformedLogFile(f"Larger than {limit} bytes uncompressed.")
    return text


def _json_document(data: bytes, limit: int):
    # Every JSON value but the first follows a comma, a colon or an opening bracket: counting
    # them (in C) bounds the objects json.loads would build, before it builds any.
    values = data.count(b",") + data.count(b"[") + data.count(b"{")
    if values > max(limit // BYTES_PER_VALUE, 1000):
        raise MalformedLogFile(
            f"Holds about {values:,} JSON values in {len(data):,} bytes: far denser than a "
            "CloudTrail log file."
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedLogFile("Not UTF-8 text.") from exc
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise MalformedLogFile("Not a CloudTrail log file: JSON nested too deeply.") from exc
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers of 4,300+ digits
        raise MalformedLogFile(f"Not valid JSON ({_short(exc)}).") from exc


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _short(exc: BaseException) -> str:
    return str(exc)[:200]


# --- One record ---------------------------------------------------------------------------------

_STRING_FIELDS = ("eventSource", "eventName")  # record_event keeps them: present means a string
_OPTIONAL_STRING_FIELDS = ("awsRegion", "errorCode", "requestID")
_IDENTITY_STRING_FIELDS = ("type", "userName", "arn", "invokedBy", "principalId")


def record_problem(record) -> str:
    """Why ``record`` cannot be imported as it is, or "" when it can."""
    if not isinstance(record, dict):
        return "not a JSON object"
    event_id = record.get("eventID")
    if not isinstance(event_id, str) or not _is_uuid(event_id):
        return "no valid eventID"
    if event_time_of(record) is None:
        return "no valid eventTime (ISO 8601 with a time zone)"
    for name in _STRING_FIELDS:
        if name in record and not isinstance(record[name], str):
            return f"{name} is not a string"
    for name in _OPTIONAL_STRING_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], str):
            return f"{name} is not a string"
    identity = record.get("userIdentity")
    if identity is not None:
        if not isinstance(identity, dict):
            return "userIdentity is not an object"
        for name in _IDENTITY_STRING_FIELDS:
            if identity.get(name) is not None and not isinstance(identity[name], str):
                return f"userIdentity.{name} is not a string"
    resources = record.get("resources")
    if resources is not None:
        if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
            return "resources is not a list of objects"
        if any(not isinstance(r.get("ARN", ""), str) for r in resources):
            return "a resource ARN is not a string"
    unstorable = unstorable_reason(record)
    if unstorable:
        return f"cannot be stored as it is: {unstorable}"
    return ""


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def event_time_of(record: dict) -> datetime | None:
    """The record's ``eventTime`` in UTC, or None when it is not an ISO 8601 time with a zone
    that exists in UTC (``9999-12-31T23:59:59-01:00`` does not)."""
    value = record.get("eventTime")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return None
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# --- Records that claim to be the portal's own ------------------------------------------------

_PORTAL_IDENTITY_TYPES = frozenset({"vendorstaff", "portaluser"})
_PORTAL_PRINCIPAL = re.compile(r"user:\d+")


@functools.cache
def _invisible() -> dict[int, None]:
    """Invisible format characters (zero-width space, bidi marks …), for ``str.translate``.
    Built on first use: it takes a third of a second, too long for every process's import."""
    return dict.fromkeys(c for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf")


def portal_claim(record: dict) -> str:
    """What in ``record`` claims to be the portal's own, or "" when nothing does.

    Only the portal writes events with its event source, its users' identities (``PortalUser``,
    ``VendorStaff``, principal ``user:<id>``) or its systems (``invokedBy: byok-portal-…``).
    Compared as people read them: case, surrounding spaces, invisible characters and
    compatibility forms do not make a different name.
    """
    source = _plain(record.get("eventSource"))
    portal = _plain(PORTAL_EVENT_SOURCE)
    if source == portal or source.endswith(f".{portal}"):
        return f"eventSource {PORTAL_EVENT_SOURCE}"
    identity = record.get("userIdentity")
    if not isinstance(identity, dict):
        return ""
    if _plain(identity.get("type")) in _PORTAL_IDENTITY_TYPES:
        return "a portal identity (userIdentity.type VendorStaff or PortalUser)"
    if _PORTAL_PRINCIPAL.fullmatch(_plain(identity.get("principalId"))):
        return "a portal identity (userIdentity.principalId user:<id>)"
    invoked_by = _plain(identity.get("invokedBy"))
    agent = _plain(PORTAL_USER_AGENT)
    if invoked_by.startswith(agent) or agent in invoked_by.split("."):
        return "a portal system (userIdentity.invokedBy)"
    return ""


def _plain(value) -> str:
    if not isinstance(value, str):
        return ""
    if not value.isascii():  # ASCII has neither compatibility forms nor invisible characters
        value = unicodedata.normalize("NFKC", value).translate(_invisible())
    return value.strip().rstrip(".").casefold()


def is_log_file(key: str) -> bool:
    """CloudTrail log files (and portal exports): ``*.json.gz`` or ``*.json``, not digests."""
    if "/CloudTrail-Digest/" in f"/{key}" or key.endswith("/"):
        return False
    return key.endswith((".json.gz", ".json"))
