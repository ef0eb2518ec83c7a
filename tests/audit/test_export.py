"""Exports of the filtered audit log: CSV and CloudTrail JSON, streamed."""

import csv
import io
import json
import sys
import types
from datetime import UTC, datetime, timedelta
from unittest.mock import ANY

import pytest
from django.urls import reverse

from audit import export
from audit.models import AuditEvent
from audit.services import record_event
from tests.factories import PASSWORD, OrganizationFactory, org_admin

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
KEY = "arn:aws:kms:us-east-1:111122223333:key/aaaaaaaa-0000-0000-0000-000000000001"


@pytest.fixture(autouse=True)
def _no_sign_in_events():
    """Signing the test client in records a ConsoleLogin event; these tests count events."""
    from django.contrib.auth.signals import user_logged_in

    from audit.signals import record_login

    user_logged_in.disconnect(record_login)
    yield
    user_logged_in.connect(record_login)


@pytest.fixture
def org():
    return OrganizationFactory(name="Acme Corp")


@pytest.fixture
def admin(org):
    return org_admin(org)


@pytest.fixture
def admin_client(client, admin):
    assert client.login(username=admin.email, password=PASSWORD)
    return client


def decrypt(org, at, *, error="", name="Decrypt"):
    return record_event(
        org=org,
        kind="key-usage",
        event_name=name,
        event_source="kms.amazonaws.com",
        event_time=at,
        aws_region="us-east-1",
        user_identity={"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/r/s"},
        resources=[{"type": "AWS::KMS::Key", "ARN": KEY}],
        request_parameters={"encryptionContext": {"org": str(org.pk), "app": "jira"}},
        error_code=error,
        error_message="Key disabled" if error else "",
    )


def download(client, org, **params) -> tuple:
    response = client.get(reverse("audit:list", args=[org.pk]), params)
    assert response.status_code == 200, response.content
    return response, b"".join(response.streaming_content).decode()


def test_json_export_is_streamed_in_cloudtrail_shape_with_exact_records(admin_client, org):
    events = [decrypt(org, T0 + timedelta(minutes=i)) for i in range(5)]
    response, body = download(admin_client, org, format="json")

    assert response.streaming
    assert response["Content-Type"] == "application/json"
    document = json.loads(body)
    assert list(document) == ["Records", "ChainName", "Chain", "Digests", "DigestSchedule"]
    assert document["Records"] == [event.record for event in events]
    assert body.startswith('{"Records":[')  # records come first, before chain and digests


def test_json_export_lists_each_records_chain_link(admin_client, org):
    events = [decrypt(org, T0 + timedelta(minutes=i)) for i in range(3)]
    _response, body = download(admin_client, org, format="json")
    document = json.loads(body)
    assert document["ChainName"] == f"org:{org.pk}"
    assert document["Chain"] == [
        {
            "eventID": str(e.event_id),
            "sequence": e.sequence,
            "prevHash": e.prev_hash,
            "hash": e.hash,
            "hashFormat": 2,
            "provenance": {"origin": "vendor-key-usage", "recordedByVendor": True},
        }
        for e in events
    ]
    assert [link["eventID"] for link in document["Chain"]] == [
        r["eventID"] for r in document["Records"]
    ]


def test_json_export_without_the_digests_module_has_an_empty_digest_list(
    admin_client, org, monkeypatch
):
    decrypt(org, T0)
    monkeypatch.setitem(sys.modules, "audit.digests", None)  # makes the import fail
    _response, body = download(admin_client, org, format="json")
    assert json.loads(body)["Digests"] == []


def test_json_export_carries_the_digests_for_its_sequence_range(admin_client, org, monkeypatch):
    events = [decrypt(org, T0 + timedelta(minutes=i)) for i in range(4)]
    calls = []

    def digests_for_export(*, org, events_first_sequence, events_last_sequence):
        calls.append((org.pk, events_first_sequence, events_last_sequence))
        return [{"chain": f"org:{org.pk}", "sequence": events_last_sequence, "signature": "sig"}]

    fake = types.ModuleType("audit.digests")
    fake.digests_for_export = digests_for_export
    monkeypatch.setitem(sys.modules, "audit.digests", fake)

    _response, body = download(admin_client, org, format="json", event_name="Decrypt")

    document = json.loads(body)
    assert calls == [(org.pk, events[0].sequence, events[-1].sequence)]
    assert document["Digests"] == [
        {"chain": f"org:{org.pk}", "sequence": events[-1].sequence, "signature": "sig"}
    ]
    assert list(document)[-2:] == ["Digests", "DigestSchedule"]
    assert document["DigestSchedule"] == {"intervalSeconds": None, "nextDigestAt": None}


def test_csv_export_has_the_main_columns_and_the_record(admin_client, org):
    ok = decrypt(org, T0)
    failed = decrypt(org, T0 + timedelta(minutes=1), error="DisabledException")
    response, body = download(admin_client, org, format="csv")

    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(body)))
    assert list(rows[0]) == export.CSV_COLUMNS
    assert [row["eventID"] for row in rows] == [str(ok.event_id), str(failed.event_id)]
    assert rows[1]["errorCode"] == "DisabledException"
    assert rows[0]["eventTime"] == "2025-05-01T12:00:00Z"
    assert rows[0]["resourceARN"] == KEY
    assert rows[0]["kind"] == "key-usage"
    assert rows[0]["provenance"] == (
        "Recorded by the portal (the vendor's call to your AWS account)"
    )
    assert json.loads(rows[0]["record"]) == ok.record


def test_exports_say_where_each_event_came_from(admin_client, org):
    decrypt(org, T0)
    record_event(org=org, event_name="RequestSetup", event_time=T0)
    imported = {
        "eventVersion": "1.09",
        "eventID": "0b0e3a52-3c3c-4d8e-9e0b-000000000001",
        "eventTime": "2025-05-01T12:05:00Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": "DisableKey",
    }
    source = 's3://trail/AWSLogs/1/CloudTrail/us-east-1/2025/05/01/a,"b".json.gz'
    record_event(
        org=org, kind="ingested", event_name="DisableKey", record=imported, imported_from=source
    )

    _response, body = download(admin_client, org, format="json")
    document = json.loads(body)
    assert [entry["provenance"] for entry in document["Chain"]] == [
        {"origin": "vendor-key-usage", "recordedByVendor": True},
        {"origin": "portal", "recordedByVendor": True},
        {"origin": "customer-cloudtrail", "recordedByVendor": False, "importedFrom": source},
    ]
    assert document["Records"][2] == imported  # the record itself is kept exactly

    _response, body = download(admin_client, org, format="csv")
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [row["provenance"] for row in rows[:3]] == [
        "Recorded by the portal (the vendor's call to your AWS account)",
        "Recorded by the portal",
        f"Imported from your CloudTrail ({source})",
    ]


def test_export_holds_only_the_filtered_set(admin_client, org):
    decrypt(org, T0)
    wanted = decrypt(org, T0 + timedelta(minutes=1), error="DisabledException")
    decrypt(org, T0 + timedelta(days=3), error="DisabledException")
    decrypt(OrganizationFactory(), T0 + timedelta(minutes=1), error="DisabledException")
    params = {"errors_only": "on", "to": "2025-05-02T00:00"}
    _response, body = download(admin_client, org, format="json", **params)
    assert [r["eventID"] for r in json.loads(body)["Records"]] == [str(wanted.event_id)]
    _response, body = download(admin_client, org, format="csv", **params)
    assert [row["eventID"] for row in csv.DictReader(io.StringIO(body))] == [str(wanted.event_id)]


def test_export_filename_names_the_org_and_the_time(admin_client, org):
    response, _body = download(admin_client, org, format="csv")
    disposition = response["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="audit-{org.pk}-acme-corp-')
    assert disposition.endswith('Z.csv"')
    assert response["Cache-Control"] == "no-store"


def test_export_is_audited_and_holds_only_what_existed_when_it_started(admin_client, org, admin):
    decrypt(org, T0)
    response = admin_client.get(reverse("audit:list", args=[org.pk]), {"format": "json"})
    later = decrypt(org, T0 + timedelta(minutes=5))  # lands while the file is streaming
    document = json.loads(b"".join(response.streaming_content))

    exported = [r["eventName"] for r in document["Records"]]
    assert exported == ["Decrypt"]
    assert len(document["Chain"]) == 1
    assert str(later.event_id) not in json.dumps(document)
    audit_of_export = AuditEvent.objects.get(organization=org, event_name="ExportAuditEvents")
    assert audit_of_export.principal == admin.email
    assert audit_of_export.record["requestParameters"]["format"] == "json"


def test_export_reads_in_batches_with_constant_memory(admin_client, org, monkeypatch):
    events = [decrypt(org, T0 + timedelta(seconds=i)) for i in range(23)]
    monkeypatch.setattr(export, "BATCH_SIZE", 5)
    seen_batches = []
    real_batches = export.batches

    def counting(queryset, fields, *, size=None):
        for rows in real_batches(queryset, fields, size=size):
            assert len(rows) <= 5
            seen_batches.append(len(rows))
            yield rows

    monkeypatch.setattr(export, "batches", counting)
    _response, body = download(admin_client, org, format="json")
    assert [r["eventID"] for r in json.loads(body)["Records"]] == [str(e.event_id) for e in events]
    assert seen_batches == [5, 5, 5, 5, 3] * 2  # records pass, then chain pass


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(admin_client, org):
    record_event(org=org, event_name='=HYPERLINK("http://evil")', event_time=T0)
    _response, body = download(admin_client, org, format="csv")
    row = next(csv.DictReader(io.StringIO(body)))
    assert row["eventName"] == '\'=HYPERLINK("http://evil")'
    assert json.loads(row["record"])["eventName"] == '=HYPERLINK("http://evil")'


def test_empty_export_is_still_a_valid_document(admin_client, org):
    _response, body = download(admin_client, org, format="json", event_name="Nothing")
    assert json.loads(body) == {
        "Records": [],
        "ChainName": f"org:{org.pk}",
        "Chain": [],
        "Digests": [],
        "DigestSchedule": {"intervalSeconds": 3600, "nextDigestAt": ANY},
    }


def test_csv_quotes_fields_with_commas_quotes_and_newlines(admin_client, org):
    record_event(org=org, event_name='Odd, "quoted"\nname', event_time=T0)
    _response, body = download(admin_client, org, format="csv")
    row = next(csv.DictReader(io.StringIO(body, newline="")))
    assert row["eventName"] == 'Odd, "quoted"\nname'


def test_export_is_in_chain_order_with_each_records_link(admin_client, org, monkeypatch):
    monkeypatch.setattr(export, "BATCH_SIZE", 2)
    recent = decrypt(org, T0 + timedelta(hours=1))
    late_import = record_event(org=org, kind="ingested", event_name="DisableKey", event_time=T0)
    more = [decrypt(org, T0 + timedelta(hours=2)) for _ in range(3)]  # across batch edges
    _response, body = download(admin_client, org, format="json")
    document = json.loads(body)
    expected = [recent, late_import, *more]  # as recorded, not by event time
    assert [r["eventID"] for r in document["Records"]] == [str(e.event_id) for e in expected]
    assert [link["sequence"] for link in document["Chain"]] == [e.sequence for e in expected]


def test_json_export_verifies_offline_with_its_digests(admin_client, org):
    from audit import digests, verify

    decrypt(org, T0 + timedelta(hours=1))
    record_event(org=org, kind="ingested", event_name="DisableKey", event_time=T0)
    digests.sign_chain_digests()
    decrypt(org, T0 + timedelta(hours=2), error="DisabledException")
    digests.sign_chain_digests()

    _response, body = download(admin_client, org, format="json")
    report = verify.verify_export(json.loads(body), digests.public_key())
    assert report.status == verify.EXIT_OK, report.problems
    assert (report.events, report.digests) == (3, 2)

    _response, body = download(admin_client, org, format="json", errors_only="on")
    filtered = verify.verify_export(json.loads(body), digests.public_key(), allow_gaps=True)
    assert filtered.ok, filtered.problems
    assert filtered.events == 1
