"""``seed_demo`` shows every capability end to end (moto in-process, eager Celery): Acme's BYOK
site with records, replacement keys whose re-encryption preflight passes, and an imported trail.
Also: the demo app is not installed in production (DEBUG off)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from audit.models import AuditEvent, CloudTrailSource, IngestedFile
from connections import aws
from connections.models import ByokConnection, RegionalKey
from dataplane import dek_cache
from dataplane.models import AppRecord
from dataplane.records import read_record
from demo import trail
from demo.acme import ACME_AWS_ACCOUNT
from integrations.ingestion import parse_log_file
from orgs.models import Organization, User
from orgs.staff_roles import ACCOUNT_REPS
from reencryption import services as reencryption
from setup.onboarding import KEY_ALIAS, REPLACEMENT_KEY_ALIAS

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def seed() -> str:
    from io import StringIO

    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


@pytest.fixture
def seeded(mock_aws, settings):
    settings.DEBUG = True
    dek_cache.purge_all()
    first = seed()
    yield first
    dek_cache.purge_all()


def acme() -> Organization:
    return Organization.objects.get(name="Acme Corp")


def test_seed_demo_succeeds_twice_and_changes_nothing_the_second_time(seeded):
    assert "already set up" not in seeded and "skipped" not in seeded and "failed" not in seeded
    counts = {
        m.__name__: m.objects.count()
        for m in (AppRecord, RegionalKey, IngestedFile, CloudTrailSource, ByokConnection)
    }
    ingested = AuditEvent.objects.filter(kind=AuditEvent.Kind.INGESTED).count()
    second = seed()
    assert "already set up" in second and "failed" not in second
    assert counts == {
        m.__name__: m.objects.count()
        for m in (AppRecord, RegionalKey, IngestedFile, CloudTrailSource, ByokConnection)
    }
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.INGESTED).count() == ingested
    # And Acme's records decrypt.
    dek_cache.purge_all()
    for record in AppRecord.objects.filter(app_instance__site__organization=acme()):
        body = json.loads(read_record(app_instance=record.app_instance, record_id=record.pk))
        assert body


def test_replacement_alias_resolves_to_a_new_enabled_key_in_every_region(seeded):
    connection = ByokConnection.objects.get(organization=acme())
    current = {k.region: k.key_arn for k in connection.keys.filter(is_current=True)}
    session = aws.assume_customer_role(
        role_arn=connection.role_arn, external_id=connection.external_id, cached=False
    )
    for region, arn in current.items():
        assert session.describe_key(region, KEY_ALIAS).arn == arn
        new = session.describe_key(region, REPLACEMENT_KEY_ALIAS)
        assert new.arn != arn and new.enabled and new.state == "Enabled"
        assert new.arn.split(":")[4] == ACME_AWS_ACCOUNT


def test_an_acme_re_encryption_preflight_passes(seeded, django_capture_on_commit_callbacks):
    org = acme()
    admin = User.objects.get(email="admin@acme.example")
    rep = User.objects.get(email="rep@vendor.example")
    assert rep.groups.filter(name=ACCOUNT_REPS).exists()
    req = reencryption.request_reencryption(org=org, actor=admin)
    reencryption.claim_reencryption_request(request_id=req.pk, rep=rep)
    with django_capture_on_commit_callbacks(execute=True):
        reencryption.start_reencryption_preflight(request_id=req.pk, actor=rep)
    run = req.preflights.get()
    assert run.status == "passed", [c for c in run.checks if not c["passed"]]
    assert {"key-new", "re-encrypt"} <= {c["name"] for c in run.checks}


def test_after_a_re_encryption_the_seed_deploys_fresh_replacement_keys(
    seeded, django_capture_on_commit_callbacks
):
    """The demo keeps working after a rotation: the next re-encryption's preflight passes."""
    org = acme()
    admin = User.objects.get(email="admin@acme.example")
    rep = User.objects.get(email="rep@vendor.example")
    connection = ByokConnection.objects.get(organization=org)
    session = aws.assume_customer_role(
        role_arn=connection.role_arn, external_id=connection.external_id, cached=False
    )
    # As if the job had finished: the replacement keys are now the keys in use.
    for key in connection.keys.filter(is_current=True):
        new = session.describe_key(key.region, REPLACEMENT_KEY_ALIAS).arn
        key.is_current = False
        key.save(update_fields=["is_current"])
        RegionalKey.objects.create(
            connection=connection, region=key.region, key_arn=new, alias=REPLACEMENT_KEY_ALIAS,
            status="enabled",
        )  # fmt: skip
    seed()
    moved = {r: session.describe_key(r, REPLACEMENT_KEY_ALIAS).arn for r in ("us-east-1",)}
    seed()  # idempotent: the alias is not moved again
    assert moved == {r: session.describe_key(r, REPLACEMENT_KEY_ALIAS).arn for r in moved}
    in_use = set(RegionalKey.objects.values_list("key_arn", flat=True))
    assert not set(moved.values()) & in_use
    req = reencryption.request_reencryption(org=org, actor=admin)
    reencryption.claim_reencryption_request(request_id=req.pk, rep=rep)
    with django_capture_on_commit_callbacks(execute=True):
        reencryption.start_reencryption_preflight(request_id=req.pk, actor=rep)
    run = req.preflights.get()
    assert run.status == "passed", [c for c in run.checks if not c["passed"]]


def test_the_trail_is_imported_into_acmes_audit_log(seeded):
    org = acme()
    source = CloudTrailSource.objects.get(organization=org)
    assert (source.bucket, source.prefix) == (trail.TRAIL_BUCKET, trail.TRAIL_PREFIX)
    assert source.enabled and not source.last_error and source.last_success_at
    files = IngestedFile.objects.filter(source=source)
    people = trail.log_files(ByokConnection.objects.get(organization=org), trail.trail_day())
    assert set(people) < set(files.values_list("key", flat=True))  # and the vendor's calls
    assert set(files.values_list("status", flat=True)) == {"imported"}
    assert sum(f.records_dropped for f in files) > 0  # console and unrelated events left out
    imported = AuditEvent.objects.filter(organization=org, kind=AuditEvent.Kind.INGESTED)
    names = set(imported.values_list("event_name", flat=True))
    assert {"AssumeRole", "DescribeKey", "GenerateDataKey"} <= names  # the vendor's calls
    assert "GetRole" in names  # IAM on the BYOK role
    assert "ListObjects" not in names  # the portal's own reads of the trail are never imported
    assert "ConsoleLogin" not in names and "DescribeInstances" not in names


def test_trail_files_are_realistic_cloudtrail_log_files(mock_aws, seeded):
    s3 = aws.customer_admin_client("s3", "us-east-1", ACME_AWS_ACCOUNT)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=trail.TRAIL_BUCKET)["Contents"]]
    for key in keys:
        parts = key.split("/")
        assert parts[:3] == ["AWSLogs", ACME_AWS_ACCOUNT, "CloudTrail"]
        region = parts[3]
        day = "/".join(parts[4:7])  # yesterday (Acme's people) or today (the vendor's calls)
        name = parts[7]
        assert name.startswith(f"{ACME_AWS_ACCOUNT}_CloudTrail_{region}_")
        assert name.endswith(".json.gz")
        body = s3.get_object(Bucket=trail.TRAIL_BUCKET, Key=key)["Body"].read()
        assert body[:2] == b"\x1f\x8b"
        document = json.loads(gzip.decompress(body))
        records = parse_log_file(body)
        assert records == document["Records"] and records
        for record in records:
            assert record["recipientAccountId"] == ACME_AWS_ACCOUNT
            assert record["eventTime"].startswith(day.replace("/", "-"))


def test_the_audit_page_shows_imported_events(seeded, client):
    from django.urls import reverse

    from tests.support import login_verified

    org = acme()
    login_verified(client, User.objects.get(email="admin@acme.example"))
    response = client.get(reverse("audit:list", kwargs={"org_id": org.pk}))
    assert response.status_code == 200
    assert b"GenerateDataKey" in response.content or b"Decrypt" in response.content


def test_without_aws_the_seed_skips_acmes_aws_side(settings):
    settings.DEBUG = True
    settings.AWS_ENDPOINT_URL = None
    out = seed()
    assert "skipped" in out
    assert not CloudTrailSource.objects.exists()


@pytest.mark.slow
def test_with_demo_disabled_the_demo_app_is_not_installed(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DEMO_", "DEBUG", "AWS_ENDPOINT"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="byokportal.settings",
        DEBUG="0",
        SECRET_KEY="x" * 64,
        AUDIT_SIGNING_KEY=base64.b64encode(b"k" * 32).decode(),
        ALLOWED_HOSTS="portal.example",
        BYOK_VAR_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
    )
    code = (
        "import django; django.setup(); from django.apps import apps; "
        "from django.conf import settings; "
        "print(apps.is_installed('demo'), settings.DEMO_ENABLED, settings.DEBUG)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ["False", "False", "False"], result.stdout


def test_next_make_run_with_a_fresh_moto_rebuilds_acme_and_everything_works(
    seeded, django_capture_on_commit_callbacks
):
    """``make run`` keeps the database but starts an empty moto: the seed rebuilds Acme's AWS
    side (an earlier re-encryption of the vanished keys included) and the demo works again."""
    from moto.moto_api._internal.models import moto_api_backend

    org = acme()
    admin = User.objects.get(email="admin@acme.example")
    rep = User.objects.get(email="rep@vendor.example")
    reencryption.request_reencryption(org=org, actor=admin)  # left open in the last session
    imported_before = AuditEvent.objects.filter(organization=org, kind="ingested").count()
    moto_api_backend.reset()
    aws.forget_sessions()
    dek_cache.purge_all()

    out = seed()
    assert "already set up" not in out and "failed" not in out and "skipped" not in out, out
    dek_cache.purge_all()
    records = AppRecord.objects.filter(app_instance__site__organization=org)
    assert records.exists()
    for record in records:
        assert json.loads(read_record(app_instance=record.app_instance, record_id=record.pk))
    imported = AuditEvent.objects.filter(organization=org, kind="ingested").count()
    assert imported > imported_before  # the new keys' trail
    req = reencryption.request_reencryption(org=org, actor=admin)
    reencryption.claim_reencryption_request(request_id=req.pk, rep=rep)
    with django_capture_on_commit_callbacks(execute=True):
        reencryption.start_reencryption_preflight(request_id=req.pk, actor=rep)
    run = req.preflights.get()
    assert run.status == "passed", [c for c in run.checks if not c["passed"]]
