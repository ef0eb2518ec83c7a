"""Ingestion of the customer's own CloudTrail from S3 (moto in-process), through the BYOK role."""

import gzip
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from audit import digests
from audit.models import AuditEvent, CloudTrailSource, IngestedFile
from audit.services import record_event
from connections import aws
from connections.models import ByokConnection, ConnectionState
from integrations import ingestion
from tests.customer_aws import CUSTOMER_ACCOUNT, CustomerAws
from tests.factories import OrganizationFactory, org_admin, org_member
from tests.integrations.trail_support import (
    BUCKET,
    OTHER_KEY,
    PREFIX,
    RETIRED_KEY_ID,
    byok_org,
    ct_record,
    gz,
    ingested,
    log_key,
    put,
)

pytestmark = pytest.mark.django_db


def test_import_keeps_byok_events_dedupes_and_reports_each_file(acme):
    s3, arns, connection = acme["s3"], acme["arns"], acme["connection"]
    ours = ct_record(key_arn=arns["us-east-1"])
    vendor_assume = ct_record(
        "AssumeRole",
        source="sts.amazonaws.com",
        request_parameters={"roleArn": connection.role_arn, "roleSessionName": "byok-portal"},
    )
    others = ct_record(key_arn=OTHER_KEY)
    retired_by_id = ct_record(
        "DisableKey", request_parameters={"keyId": RETIRED_KEY_ID}, key_arn=None
    )
    trust_change = ct_record(
        "UpdateAssumeRolePolicy",
        source="iam.amazonaws.com",
        request_parameters={"roleName": connection.role_name, "policyDocument": "{}"},
    )
    second_region = ct_record("GenerateDataKey", key_arn=arns["us-west-2"])
    put(s3, log_key(1), gz({"Records": [ours, vendor_assume, others]}))
    put(s3, log_key(2), gz({"Records": [ours, retired_by_id, trust_change]}))  # ours: duplicate
    put(s3, log_key(3, "us-west-2"), gz({"Records": [second_region]}))
    put(s3, log_key(4), b"\x1f\x8b\x08\x00 this is not really gzip")
    put(s3, log_key(5), gz({"events": []}))
    put(s3, f"{PREFIX}../CloudTrail-Digest/us-east-1/x_CloudTrail-Digest_1.json.gz", gz({}))
    put(s3, f"{PREFIX}us-east-1/2026/11/29/", b"")  # a "folder" object
    put(s3, "elsewhere/ignored.json.gz", gz({"Records": [ct_record(key_arn=arns["us-east-1"])]}))

    run = ingestion.ingest_source(source_id=acme["source"].pk)

    assert run.error == ""
    assert (run.files_imported, run.files_malformed, run.files_skipped) == (3, 2, 2)
    assert ingested(acme["org"]) == [
        ours,
        vendor_assume,
        retired_by_id,
        trust_change,
        second_region,
    ]
    files = {f.key: f for f in IngestedFile.objects.filter(source=acme["source"])}
    first, second = files[log_key(1)], files[log_key(2)]
    assert (first.status, first.records_total, first.records_imported, first.records_dropped) == (
        "imported",
        3,
        2,
        1,
    )
    assert (second.records_imported, second.records_duplicate) == (2, 1)
    assert files[log_key(4)].status == "malformed" and "gzip" in files[log_key(4)].error
    assert files[log_key(5)].status == "malformed" and "Records" in files[log_key(5)].error
    assert "elsewhere/ignored.json.gz" not in files
    assert sorted(f.status for f in files.values()).count("skipped") == 2
    assert digests.verify_chain(f"org:{acme['org'].pk}") is None


def test_a_second_run_changes_nothing_and_reads_no_file(acme, monkeypatch):
    put(acme["s3"], log_key(1), gz({"Records": [ct_record(key_arn=acme["arns"]["us-east-1"])]}))
    put(acme["s3"], log_key(2), b"not json at all")
    ingestion.ingest_source(source_id=acme["source"].pk)
    files_before = list(IngestedFile.objects.values_list("key", "etag", "status"))
    events_before = AuditEvent.objects.count()

    reads = []
    original = aws.CustomerSession.get_object
    monkeypatch.setattr(
        aws.CustomerSession,
        "get_object",
        lambda self, *a, **k: reads.append(a) or original(self, *a, **k),
    )
    run = ingestion.ingest_source(source_id=acme["source"].pk)

    assert run.files == [] and run.error == ""
    assert reads == []
    assert list(IngestedFile.objects.values_list("key", "etag", "status")) == files_before
    assert AuditEvent.objects.count() == events_before


def test_a_replaced_file_is_read_again_and_only_new_events_are_added(acme):
    record = ct_record(key_arn=acme["arns"]["us-east-1"])
    put(acme["s3"], log_key(1), gz({"Records": [record]}))
    ingestion.ingest_source(source_id=acme["source"].pk)
    newer = ct_record("Encrypt", key_arn=acme["arns"]["us-east-1"])
    put(acme["s3"], log_key(1), gz({"Records": [record, newer]}))  # new ETag

    ingestion.ingest_source(source_id=acme["source"].pk)

    assert ingested(acme["org"]) == [record, newer]
    latest = IngestedFile.objects.filter(key=log_key(1)).order_by("-id").first()
    assert (latest.records_imported, latest.records_duplicate) == (1, 1)


def test_a_file_with_one_bad_record_is_malformed_and_imports_nothing(acme):
    good = ct_record(key_arn=acme["arns"]["us-east-1"])
    bad = ct_record(key_arn=acme["arns"]["us-east-1"]) | {"eventID": "not-a-uuid"}
    later = ct_record("Encrypt", key_arn=acme["arns"]["us-east-1"])
    put(acme["s3"], log_key(1), gz({"Records": [good, bad]}))
    put(acme["s3"], log_key(2), gz({"Records": [later]}))

    ingestion.ingest_source(source_id=acme["source"].pk)

    malformed = IngestedFile.objects.get(key=log_key(1))
    assert malformed.status == "malformed"
    assert malformed.error == "Record 2: no valid eventID."
    assert ingested(acme["org"]) == [later]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"eventTime": "yesterday"}, "eventTime"),
        ({"eventTime": "2026-11-29T10:00:00"}, "eventTime"),  # no time zone
        ({"eventName": 42}, "eventName is not a string"),
        ({"userIdentity": "root"}, "userIdentity is not an object"),
        ({"resources": [{"ARN": 7}]}, "resource ARN"),
    ],
)
def test_records_are_validated_before_anything_is_written(change, problem):
    record = ct_record(key_arn=OTHER_KEY) | change
    with pytest.raises(ingestion.MalformedLogFile, match=problem):
        ingestion.parse_log_file(gz({"Records": [record]}))


def test_a_decompression_bomb_is_refused():
    with pytest.raises(ingestion.MalformedLogFile, match="uncompressed"):
        ingestion.parse_log_file(gzip.compress(b" " * 5000), max_bytes=1000)


def test_the_portals_own_reads_of_the_trail_bucket_are_not_imported(acme):
    session = f"arn:aws:sts::{CUSTOMER_ACCOUNT}:assumed-role/byok-key-management/byok-portal"
    own_read = ct_record(
        "GetObject",
        source="s3.amazonaws.com",
        request_parameters={"bucketName": BUCKET, "key": log_key(1)},
        identity={"type": "AssumedRole", "arn": session, "accountId": CUSTOMER_ACCOUNT},
    )
    decrypt = ct_record(
        "Decrypt",
        identity={"type": "AssumedRole", "arn": session, "accountId": CUSTOMER_ACCOUNT},
    )
    put(acme["s3"], log_key(1), gz({"Records": [own_read, decrypt]}))

    ingestion.ingest_source(source_id=acme["source"].pk)

    assert ingested(acme["org"]) == [decrypt]


def test_events_older_than_retention_are_dropped(acme, settings):
    settings.AUDIT_RETENTION_DAYS = 30
    old = ct_record(key_arn=acme["arns"]["us-east-1"], when=datetime.now(UTC) - timedelta(days=31))
    put(acme["s3"], log_key(1), gz({"Records": [old]}))

    ingestion.ingest_source(source_id=acme["source"].pk)

    assert ingested(acme["org"]) == []
    assert IngestedFile.objects.get().records_dropped == 1


def test_the_import_runs_as_the_assumed_byok_role_and_is_audited(acme):
    put(acme["s3"], log_key(1), gz({"Records": []}))
    ingestion.ingest_source(source_id=acme["source"].pk)
    assume = AuditEvent.objects.get(organization=acme["org"], event_name="AssumeRole")
    assert assume.kind == AuditEvent.Kind.KEY_USAGE
    assert assume.record["requestParameters"]["roleArn"] == acme["connection"].role_arn


def test_a_missing_bucket_is_reported_on_the_source(acme):
    CloudTrailSource.objects.filter(pk=acme["source"].pk).update(bucket="no-such-bucket-here")

    run = ingestion.ingest_source(source_id=acme["source"].pk)

    source = CloudTrailSource.objects.get(pk=acme["source"].pk)
    assert "does not exist" in run.error
    assert source.last_error == run.error and source.last_run_at is not None
    assert source.last_success_at is None


def test_a_revoked_connection_pauses_imports(acme):
    put(acme["s3"], log_key(1), gz({"Records": [ct_record(key_arn=acme["arns"]["us-east-1"])]}))
    ByokConnection.objects.filter(pk=acme["connection"].pk).update(state=ConnectionState.REVOKED)

    run = ingestion.ingest_source(source_id=acme["source"].pk)

    assert "revoked" in run.error
    assert not IngestedFile.objects.exists()


def test_the_beat_task_imports_every_enabled_source(acme):
    put(acme["s3"], log_key(1), gz({"Records": [ct_record(key_arn=acme["arns"]["us-east-1"])]}))
    from integrations.tasks import ingest_all_cloudtrail

    assert ingest_all_cloudtrail.delay().get() == [acme["source"].pk]
    assert len(ingested(acme["org"])) == 1


# --- Export round trip -----------------------------------------------------------------------


def test_a_json_export_reingested_into_another_org_yields_its_aws_records(acme, settings):
    org_a = acme["org"]
    record_event(org=org_a, event_name="RequestByokSetup", request_parameters={"site": "acme"})
    record_event(
        org=org_a,
        event_name="Decrypt",
        kind=AuditEvent.Kind.KEY_USAGE,
        event_source="kms.amazonaws.com",
        resources=[{"type": "AWS::KMS::Key", "ARN": acme["arns"]["us-east-1"]}],
        request_parameters={"encryptionContext": {"org": str(org_a.pk)}},
    )
    put(acme["s3"], log_key(1), gz({"Records": [ct_record(key_arn=acme["arns"]["us-west-2"])]}))
    ingestion.ingest_source(source_id=acme["source"].pk)
    digests.sign_chain_digests()
    export = digests.export_document(org=org_a)
    exported = [
        e.record for e in AuditEvent.objects.filter(organization=org_a).order_by("sequence")
    ]
    assert export["Records"] == exported and len(exported) >= 4

    # Globex: its own AWS account and bucket; it imports everything in its prefix.
    globex_aws = CustomerAws(account_id="777788889999")
    org_b, _connection, _arns, source_b = byok_org(
        globex_aws, name="Globex", bucket="globex-trail", scope="all"
    )
    put(
        globex_aws.client("s3", "us-east-1"),
        f"{PREFIX}moved/acme-export.json.gz",
        gz(export),
        bucket="globex-trail",
    )

    run = ingestion.ingest_source(source_id=source_b.pk)

    # The AWS records come across as they are; the portal's own actions cannot be imported
    # (Acme's signed chain still proves those).
    aws_records = [r for r in exported if r["eventSource"] != "byok.portal.vendor.example"]
    assert run.files_imported == 1
    assert ingested(org_b) == aws_records and len(aws_records) == len(exported) - 1
    moved = IngestedFile.objects.get(source=source_b)
    assert moved.error.startswith("1 record was refused")
    assert digests.verify_chain(f"org:{org_b.pk}") is None
    # The same export imported back into Acme changes nothing: every eventID is there already.
    CloudTrailSource.objects.filter(pk=acme["source"].pk).update(scope="all")
    put(acme["s3"], f"{PREFIX}moved/acme-export.json.gz", gz(export))
    before = AuditEvent.objects.filter(organization=org_a).count()
    ingestion.ingest_source(source_id=acme["source"].pk)
    again = IngestedFile.objects.get(
        source=acme["source"], key=f"{PREFIX}moved/acme-export.json.gz"
    )
    assert again.records_duplicate == len(aws_records) and again.records_imported == 0
    assert AuditEvent.objects.filter(organization=org_a).count() == before


def test_the_same_event_may_live_in_two_orgs_but_not_twice_in_one():
    a, b = OrganizationFactory(), OrganizationFactory()
    record = ct_record(key_arn=OTHER_KEY)
    record_event(org=a, kind=AuditEvent.Kind.INGESTED, event_name="Decrypt", record=record)
    record_event(org=b, kind=AuditEvent.Kind.INGESTED, event_name="Decrypt", record=record)
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        record_event(org=a, kind=AuditEvent.Kind.INGESTED, event_name="Decrypt", record=record)


# --- The page ----------------------------------------------------------------------------------


def test_admin_configures_the_source_and_sees_imported_files(
    acme, client, django_capture_on_commit_callbacks
):
    org = acme["org"]
    CloudTrailSource.objects.filter(pk=acme["source"].pk).delete()
    put(acme["s3"], log_key(1), gz({"Records": [ct_record(key_arn=acme["arns"]["us-east-1"])]}))
    put(acme["s3"], log_key(2), b"{broken")
    client.force_login(org_admin(org))

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("integrations:source", args=[org.pk]),
            {
                "bucket": BUCKET,
                "prefix": "/" + PREFIX,
                "region": "us-east-1",
                "scope": "byok",
                "enabled": "on",
            },
        )

    assert response.status_code == 302
    source = CloudTrailSource.objects.get(organization=org)
    assert source.prefix == PREFIX
    assert AuditEvent.objects.filter(organization=org, event_name="PutCloudTrailSource").exists()
    page = client.get(reverse("integrations:index", args=[org.pk]))
    html = page.content.decode()
    assert log_key(1) in html and log_key(2) in html
    assert "Malformed" in html and "Not valid JSON" in html


def test_source_form_refuses_a_bad_bucket_name(acme, client):
    client.force_login(org_admin(acme["org"]))
    response = client.post(
        reverse("integrations:source", args=[acme["org"].pk]),
        {"bucket": "Bad_Bucket", "region": "us-east-1", "scope": "byok"},
    )
    assert response.status_code == 400
    assert "Enter a bucket name" in response.content.decode()


def test_an_org_without_byok_is_told_to_set_it_up_first(client):
    org = OrganizationFactory()
    client.force_login(org_admin(org))
    assert (
        "Set up BYOK first"
        in client.get(reverse("integrations:index", args=[org.pk])).content.decode()
    )
    response = client.post(
        reverse("integrations:source", args=[org.pk]),
        {"bucket": "some-bucket", "region": "us-east-1", "scope": "byok", "enabled": "on"},
    )
    assert response.status_code == 400
    assert not CloudTrailSource.objects.exists()


def test_members_get_403_and_outsiders_404_on_integrations(client):
    org = OrganizationFactory()
    client.force_login(org_member(org))
    assert client.get(reverse("integrations:index", args=[org.pk])).status_code == 403
    client.force_login(org_admin(OrganizationFactory()))
    assert client.get(reverse("integrations:index", args=[org.pk])).status_code == 404
    response = client.post(reverse("integrations:import", args=[org.pk]), {"bucket": "x"})
    assert response.status_code == 404
