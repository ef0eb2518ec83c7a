"""A bad file in the customer's trail bucket never stops the org's ingestion, and a record
that claims to be the portal's own is never imported as if the portal wrote it.

Each poison sits between two good log files (moto in-process): both good files are imported,
the poisoned one is recorded with its reason, and the next run does not read it again.
"""

import gzip
import json
import logging
import tracemalloc

import pytest
from django.urls import reverse

from audit import digests
from audit.models import AuditEvent, IngestedFile
from audit.services import PORTAL_EVENT_SOURCE
from integrations import ingestion
from integrations.logfile import MAX_RECORDS, MalformedLogFile, parse_log_file, portal_claim
from tests.factories import org_admin
from tests.integrations.trail_support import BUCKET, ct_record, gz, ingested, log_key, put

pytestmark = pytest.mark.django_db


def with_field(record: dict, name: str, raw_json: str) -> bytes:
    """A gzip log file holding ``record`` whose field ``name`` is the literal JSON ``raw_json``
    (what json.dumps would never write: NaN, a nesting deeper than Python's stack, …)."""
    marker = "__RAW__"
    text = json.dumps({"Records": [record | {name: marker}]})
    return gzip.compress(text.replace(f'"{marker}"', raw_json).encode())


def poisons(good: dict) -> dict[str, tuple[bytes, str]]:
    """Poisoned file bytes, by name, with the reason the file's outcome must give."""
    deep = 50_000  # far past Python's recursion limit, under the density bound
    return {
        "deep nesting (RecursionError)": (
            with_field(good, "requestParameters", "[" * deep + "]" * deep),
            "nested too deeply",
        ),
        "eventTime past the calendar in UTC (OverflowError)": (
            gz({"Records": [good | {"eventTime": "9999-12-31T23:59:59-01:00"}]}),
            "Record 1: no valid eventTime",
        ),
        "gzip bomb": (gzip.compress(b" " * 20_000_000), "uncompressed"),
        "truncated gzip": (gz({"Records": [good]})[:-12], "Not a valid gzip file"),
        "NaN literal": (with_field(good, "responseElements", "NaN"), "NaN is not a JSON number"),
        "Infinity by overflow (1e400)": (
            with_field(good, "responseElements", "1e400"),
            "NaN or an infinite number",
        ),
        "NUL character": (
            gz({"Records": [good | {"userAgent": "curl\u0000"}]}),
            "the NUL character",
        ),
        "lone surrogate": (
            with_field(good, "userAgent", '"\\ud800"'),
            "lone surrogate",
        ),
        "integer beyond a double": (
            with_field(good, "responseElements", "1" + "0" * 400),
            "beyond the range of a double",
        ),
        "non-object record": (gz({"Records": [good, 42]}), "Record 2: not a JSON object"),
        "eventID of the wrong type": (
            gz({"Records": [good | {"eventID": 12345678901234567890123456789012}]}),
            "no valid eventID",
        ),
        "eventName null": (gz({"Records": [good | {"eventName": None}]}), "eventName is not"),
    }


POISON_NAMES = list(poisons(ct_record()))


@pytest.mark.parametrize("poison", POISON_NAMES)
def test_a_poisoned_file_between_two_good_ones_is_recorded_and_not_retried(
    acme, settings, aws_hooks, poison
):
    settings.AUDIT_INGEST_MAX_FILE_BYTES = 1_000_000
    key_arn = acme["arns"]["us-east-1"]
    first, last = ct_record(key_arn=key_arn), ct_record("Encrypt", key_arn=key_arn)
    body, reason = poisons(ct_record(key_arn=key_arn))[poison]
    put(acme["s3"], log_key(1), gz({"Records": [first]}))
    put(acme["s3"], log_key(2), body)
    put(acme["s3"], log_key(3), gz({"Records": [last]}))

    run = ingestion.ingest_source(source_id=acme["source"].pk)

    assert (run.error, run.files_imported, run.files_malformed) == ("", 2, 1)
    assert ingested(acme["org"]) == [first, last]
    poisoned = IngestedFile.objects.get(key=log_key(2))
    assert poisoned.status == IngestedFile.Status.MALFORMED
    assert reason in poisoned.error
    assert digests.verify_chain(f"org:{acme['org'].pk}") is None

    reads = []  # GetObject requests, seen at the botocore layer
    aws_hooks.append(("before-send.s3.GetObject", lambda request, **kw: reads.append(request.url)))
    again = ingestion.ingest_source(source_id=acme["source"].pk)
    assert (again.error, again.files, reads) == ("", [], [])
    assert IngestedFile.objects.filter(key=log_key(2)).count() == 1


def test_an_unexpected_error_is_recorded_without_internals_and_the_run_goes_on(
    acme, monkeypatch, caplog, client
):
    key_arn = acme["arns"]["us-east-1"]
    first, broken, last = (ct_record(name, key_arn=key_arn) for name in ("A", "B", "C"))
    for n, record in enumerate((first, broken, last), start=1):
        put(acme["s3"], log_key(n), gz({"Records": [record]}))

    def reconcile(*, org, events):  # a collaborator failing on one file, as a bug would
        if any(e.event_name == "B" for e in events):
            raise RuntimeError("internal detail: connection pool p-17 exhausted")

    monkeypatch.setattr(ingestion, "reconcile_imported_events", reconcile)
    with caplog.at_level(logging.ERROR, logger="integrations.ingestion"):
        run = ingestion.ingest_source(source_id=acme["source"].pk)

    assert (run.error, run.files_imported, run.files_malformed) == ("", 2, 1)
    assert ingested(acme["org"]) == [first, last]  # the failed file's event was rolled back
    failed = IngestedFile.objects.get(key=log_key(2))
    assert (failed.status, failed.error) == ("malformed", ingestion.IMPORT_FAILED)
    assert "internal detail" in caplog.text  # with its traceback, for the vendor's engineers
    assert digests.verify_chain(f"org:{acme['org'].pk}") is None
    client.force_login(org_admin(acme["org"]))
    page = client.get(reverse("integrations:index", args=[acme["org"].pk])).content.decode()
    assert "could not import this file" in page and "internal detail" not in page


# --- Records that claim to be the portal's own -----------------------------------------------


def impersonations(key_arn: str) -> list[dict]:
    staff = {"type": "VendorStaff", "principalId": "user:1", "userName": "rep@vendor.example"}
    return [
        ct_record("RevokeKeyAccess", key_arn=key_arn, source=PORTAL_EVENT_SOURCE),
        ct_record("RevokeKeyAccess", key_arn=key_arn, source=" BYOK.Portal.Vendor.Example\u200b "),
        ct_record("Decrypt", key_arn=key_arn, identity=staff),
        ct_record("Decrypt", key_arn=key_arn, identity={"type": "portaluser"}),
        ct_record(
            "Decrypt", key_arn=key_arn, identity={"type": "IAMUser", "principalId": "user:7"}
        ),
        ct_record(
            "Decrypt",
            key_arn=key_arn,
            identity={"type": "AWSService", "invokedBy": "byok-portal-monitor"},
        ),
    ]


def test_records_claiming_to_be_the_portal_are_refused_and_named_in_the_outcome(acme, client):
    key_arn = acme["arns"]["us-east-1"]
    genuine = ct_record(key_arn=key_arn)
    forged = impersonations(key_arn)
    put(acme["s3"], log_key(1), gz({"Records": [genuine, *forged]}))

    ingestion.ingest_source(source_id=acme["source"].pk)

    assert ingested(acme["org"]) == [genuine]
    forged_ids = [r["eventID"] for r in forged]
    assert not AuditEvent.objects.filter(event_id__in=forged_ids).exists()
    outcome = IngestedFile.objects.get(key=log_key(1))
    assert (
        outcome.status,
        outcome.records_imported,
        outcome.records_refused,
        outcome.records_dropped,
    ) == ("imported", 1, len(forged), 0)
    assert outcome.error.startswith(f"{len(forged)} records were refused")
    assert f"record 2, eventID {forged[0]['eventID']}" in outcome.error
    assert digests.verify_chain(f"org:{acme['org'].pk}") is None
    client.force_login(org_admin(acme["org"]))
    page = client.get(reverse("integrations:index", args=[acme["org"].pk])).content.decode()
    assert f"{len(forged)} records were refused" in page


def test_imported_events_say_which_file_of_the_trail_they_came_from(acme):
    record = ct_record(key_arn=acme["arns"]["us-east-1"])
    put(acme["s3"], log_key(1), gz({"Records": [record]}))

    ingestion.ingest_source(source_id=acme["source"].pk)

    event = AuditEvent.objects.get(event_id=record["eventID"])
    assert event.kind == AuditEvent.Kind.INGESTED
    assert event.imported_from == f"s3://{BUCKET}/{log_key(1)}"


VENDOR_ROLE_SESSION = "arn:aws:sts::444455556666:assumed-role/byok-key-management/byok-portal"


@pytest.mark.parametrize(
    ("change", "claimed"),
    [
        ({"eventSource": "byok.portal.vendor.example"}, True),
        ({"eventSource": "BYOK.PORTAL.VENDOR.EXAMPLE."}, True),
        ({"eventSource": "audit.byok.portal.vendor.example"}, True),
        ({"eventSource": "ｂｙｏｋ.portal.vendor.example"}, True),  # fullwidth: NFKC folds it
        ({"userIdentity": {"type": " VendorStaff "}}, True),
        ({"userIdentity": {"type": "PortalUser"}}, True),
        ({"userIdentity": {"type": "IAMUser", "principalId": " USER:42 "}}, True),
        ({"userIdentity": {"type": "AWSService", "invokedBy": "byok-portal-worker"}}, True),
        (
            {"userIdentity": {"type": "AWSService", "invokedBy": "retention.byok-portal.x"}},
            True,
        ),
        # What AWS itself writes, including the vendor's own calls with the customer's role.
        ({"eventSource": "kms.amazonaws.com"}, False),
        ({"eventSource": "portal.vendor.example"}, False),
        ({"userIdentity": {"type": "AssumedRole", "arn": VENDOR_ROLE_SESSION}}, False),
        ({"userIdentity": {"type": "AWSService", "invokedBy": "kms.amazonaws.com"}}, False),
        ({"userIdentity": {"type": "IAMUser", "principalId": "AIDAUSER12345"}}, False),
        (
            {
                "userIdentity": {
                    "type": "AWSAccount",
                    "invokedBy": "arn:aws:iam::111122223333:role/byok-portal-service",
                }
            },
            False,
        ),
    ],
)
def test_what_counts_as_a_claim_to_be_the_portal(change, claimed):
    assert bool(portal_claim(ct_record() | change)) is claimed


# --- The parser's bounds --------------------------------------------------------------------


def test_the_gzip_limit_bounds_the_memory_a_bomb_takes():
    limit = 1_000_000
    bomb = gzip.compress(b"[" * (200 * limit), compresslevel=9)  # 200 MB from about 200 KB
    tracemalloc.start()
    try:
        with pytest.raises(MalformedLogFile, match="uncompressed"):
            parse_log_file(bomb, max_bytes=limit)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit


@pytest.mark.parametrize("item", ["{}", "0", '""'])
def test_a_million_tiny_records_are_refused_quickly(item):
    body = ('{"Records":[' + ",".join([item] * 1_000_000) + "]}").encode()
    with pytest.raises(MalformedLogFile, match=f"1,000,000 records.*{MAX_RECORDS:,}"):
        parse_log_file(body)


def test_a_file_denser_than_cloudtrail_is_refused_before_parsing():
    body = ('{"Records":[' + ",".join(["[]"] * 20_000) + "]}").encode()  # 60 KB
    with pytest.raises(MalformedLogFile, match="far denser than a CloudTrail log file"):
        parse_log_file(body, max_bytes=100_000)


def test_nesting_deeper_than_any_record_is_refused():
    body = with_field(ct_record(), "requestParameters", "[" * 100 + "]" * 100)
    with pytest.raises(MalformedLogFile, match="Record 1: cannot be stored.*nested deeper"):
        parse_log_file(body)


def test_a_plain_file_over_the_limit_is_refused():
    with pytest.raises(MalformedLogFile, match="Larger than 1000 bytes"):
        parse_log_file(b" " * 1001, max_bytes=1000)


def test_an_object_the_role_may_not_read_is_retried_later_and_does_not_stop_the_others(
    acme, aws_hooks, no_retry_delay
):
    """An object encrypted under a KMS key the role may not use answers AccessDenied: the
    files around it are imported, the run says so, and the next run tries it again."""
    import botocore.awsrequest

    from tests.customer_aws import _RawBody

    key_arn = acme["arns"]["us-east-1"]
    first, middle, last = (ct_record(name, key_arn=key_arn) for name in ("A", "B", "C"))
    for n, record in enumerate((first, middle, last), start=1):
        put(acme["s3"], log_key(n), gz({"Records": [record]}))
    denied = {"on": True}

    def deny_the_middle_file(request, **kwargs):
        if denied["on"] and request.url.split("?")[0].endswith(log_key(2)):
            body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            return botocore.awsrequest.AWSResponse(
                request.url, 403, {"x-amz-request-id": "r1"}, _RawBody(body)
            )
        return None

    aws_hooks.append(("before-send.s3.GetObject", deny_the_middle_file))
    run = ingestion.ingest_source(source_id=acme["source"].pk)

    assert run.files_imported == 2
    assert "may not read 1 log file" in run.error and log_key(2) in run.error
    assert ingested(acme["org"]) == [first, last]
    assert not IngestedFile.objects.filter(key=log_key(2)).exists()

    denied["on"] = False
    again = ingestion.ingest_source(source_id=acme["source"].pk)
    assert (again.error, again.files_imported) == ("", 1)
    assert ingested(acme["org"]) == [first, last, middle]  # in the order they were imported
