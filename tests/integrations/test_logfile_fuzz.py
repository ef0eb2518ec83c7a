"""Property: whatever bytes a log file holds, ``parse_log_file`` raises ``MalformedLogFile``
with a reason, or returns records that all import — into the org's chain, which then verifies.

Three kinds of input: arbitrary bytes, arbitrary JSON documents (huge and tiny floats, -0.0,
big integers, NaN and infinities, unicode with NUL and lone surrogates, deep nesting), and
valid CloudTrail files mutated byte by byte, gzipped or not.
"""

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import digests
from audit.models import CloudTrailSource
from connections import aws
from integrations import ingestion
from integrations.logfile import MalformedLogFile, parse_log_file
from tests.factories import ByokConnectionFactory, OrganizationFactory
from tests.integrations.trail_support import ct_record

pytestmark = pytest.mark.django_db

LIMIT = 200_000
# Fixed for the run: a strategy must draw the same way when hypothesis replays an example.
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class _Everything:
    def touches(self, record: dict) -> bool:
        return True


@pytest.fixture
def source():
    org = OrganizationFactory(name="Fuzz")
    ByokConnectionFactory(organization=org)
    return CloudTrailSource.objects.create(
        organization=org, bucket="fuzz-trail", prefix="AWSLogs/", region="us-east-1", scope="all"
    )


def parses_or_refuses(source, data: bytes) -> None:
    """The property: a reason, or an import of every record that leaves the chain intact."""
    try:
        records = parse_log_file(data, max_bytes=LIMIT)
    except MalformedLogFile as exc:
        assert str(exc).strip()
        return
    obj = aws.S3Object(key=f"AWSLogs/{uuid.uuid4()}.json.gz", etag=uuid.uuid4().hex, size=len(data))
    with transaction.atomic():
        outcome = ingestion.import_records(
            source=source, obj=obj, records=records, matcher=_Everything()
        )
        assert outcome.status == "imported"
        assert (
            outcome.records_imported
            + outcome.records_duplicate
            + outcome.records_dropped
            + outcome.records_refused
            == len(records)
        )
        assert digests.verify_chain(f"org:{source.organization_id}") is None
        transaction.set_rollback(True)  # each example starts from an empty chain


# --- Strategies -------------------------------------------------------------------------------

ANY_CHARACTER = st.characters(exclude_categories=())  # surrogates included
TRICKY_STRINGS = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "é", "\u202e", "😀", "byok.portal.vendor.example", "user:1", ""]
)
TEXT = st.text(ANY_CHARACTER, max_size=12) | TRICKY_STRINGS
NUMBERS = (
    st.integers()
    | st.integers(min_value=-(10**330), max_value=10**330)
    | st.floats()  # NaN and infinities included
    | st.sampled_from([1e16, -0.0, 1.5e300, 5e-324, 2**53 + 1, 10**308, 1e-7, 0.1])
)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=25,
)
FIELDS = st.sampled_from(
    [
        "eventID",
        "eventTime",
        "eventSource",
        "eventName",
        "awsRegion",
        "errorCode",
        "requestID",
        "userIdentity",
        "resources",
        "requestParameters",
        "responseElements",
        "additionalEventData",
    ]
)
EVENT_TIMES = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.timezones() | st.just(UTC),
).map(lambda moment: moment.isoformat()) | st.sampled_from(
    ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2026-11-29T10:00:00Z", "Z"]
)


@st.composite
def cloudtrail_records(draw) -> dict:
    """A genuine record with some fields replaced by arbitrary JSON (often still valid)."""
    recent = NOW - timedelta(minutes=draw(st.integers(0, 10_000)))
    record = ct_record(draw(st.sampled_from(["Decrypt", "AssumeRole"])), when=recent)
    record["eventID"], record["requestID"] = str(draw(st.uuids())), str(draw(st.uuids()))
    if draw(st.booleans()):
        record["eventTime"] = draw(EVENT_TIMES)
    record.update(draw(st.dictionaries(FIELDS | TEXT, JSON, max_size=3)))
    if draw(st.booleans()):  # an arbitrary value nested deep inside the record
        value = draw(SCALARS)
        for _ in range(draw(st.integers(1, 200))):
            value = [value] if draw(st.booleans()) else {"k": value}
        record["requestParameters"] = value
    return record


def encoded(draw, document) -> bytes:
    text = json.dumps(document, ensure_ascii=draw(st.booleans()), allow_nan=True)
    data = text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8
    return gzip.compress(data, mtime=0) if draw(st.booleans()) else data


@st.composite
def log_files(draw) -> bytes:
    records = draw(st.lists(st.one_of(*[cloudtrail_records()] * 3, JSON), max_size=6))
    if draw(st.booleans()) and records:  # the same event twice in one file
        records.append(records[0])
    document = draw(
        st.one_of(*[st.just({"Records": records})] * 3, JSON.map(lambda value: {"Records": value}))
    )
    return encoded(draw, document)


JSON_TOKENS = st.sampled_from(
    [b'"', b"[", b"]", b"{", b"}", b",", b":", b"null", b"1e400", b"-0.0", b"1" * 400, b"NaN"]
    + [b"\\u0000", b"\\ud800", b"[" * 2000, b'"eventTime":"9999-12-31T23:59:59-01:00",']
)


@st.composite
def mutated_log_files(draw) -> bytes:
    """A valid CloudTrail file (plain or gzip), with bytes flipped, cut or inserted (JSON
    tokens as often as random bytes, so that many mutants are still JSON)."""
    records = draw(st.lists(cloudtrail_records(), min_size=1, max_size=3))
    data = json.dumps({"Records": records}, allow_nan=True).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = gzip.compress(data, mtime=0)
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if action == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 8))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8) | JSON_TOKENS)
        else:
            del data[at:]
    return bytes(data)


# --- Properties -------------------------------------------------------------------------------


@FUZZ
@given(
    data=st.binary(max_size=600) | st.binary(max_size=600).map(lambda b: gzip.compress(b, mtime=0))
)
def test_arbitrary_bytes_parse_or_are_refused(source, data):
    parses_or_refuses(source, data)


@FUZZ
@given(data=log_files())
def test_arbitrary_json_documents_parse_and_import_or_are_refused(source, data):
    parses_or_refuses(source, data)


@FUZZ
@given(data=mutated_log_files())
def test_mutated_cloudtrail_files_parse_and_import_or_are_refused(source, data):
    parses_or_refuses(source, data)


@FUZZ
@given(depth=st.integers(1, 100_000), opener=st.sampled_from(["[", '{"k":']))
def test_any_nesting_depth_parses_or_is_refused(source, depth, opener):
    closer = "]" if opener == "[" else "}"
    record = json.dumps(ct_record() | {"requestParameters": "__X__"})
    nested = opener * depth + "1" + closer * depth
    data = ('{"Records":[' + record.replace('"__X__"', nested) + "]}").encode()
    parses_or_refuses(source, data)
