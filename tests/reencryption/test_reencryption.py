"""Re-encryption under new keys: who may ask and when, the rep's review, and the job —
online, resumable, paused by the kill switch (moto in-process, eager Celery)."""

from __future__ import annotations

import datetime

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from audit.models import AuditEvent
from connections import aws
from connections import services as revocation
from connections.lifecycle import TransitionNotAllowed, transition
from connections.models import (
    ByokConnection,
    DataKey,
    DataKeyWrapping,
    RegionalKey,
)
from dataplane import dek_cache
from dataplane.models import AppRecord
from dataplane.records import AppSuspended, read_record, store_record
from orgs.models import AppInstance
from orgs.staff_roles import ACCOUNT_REPS, SUPPORT_STAFF
from reencryption import job as reencryption_job
from reencryption import services as reencryption
from reencryption.forms import ReencryptionRequestForm
from reencryption.job import lease as job_lease
from reencryption.job import runner as job_runner
from reencryption.models import ReencryptionJob, ReencryptionPreflight, ReencryptionRequest
from setup.models import PreflightRun
from setup.onboarding import REPLACEMENT_KEY_ALIAS
from tests.customer_aws import CUSTOMER_ACCOUNT
from tests.factories import (
    OrganizationFactory,
    org_admin,
    org_member,
    staff_user,
)
from tests.reencryption.support import (
    REGIONS,
    J,
    S,
    all_readable,
    approved_job,
    claimed_with_preflight,
    old_and_new,
    step,
)
from tests.support import login_staff, login_verified

pytestmark = pytest.mark.django_db


# --- The state machine ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "allowed"),
    [("degraded", False), ("active", True), ("revoked", True), ("restoring", False)],
)
def test_a_running_job_never_degrades_but_may_finish_or_be_revoked(target, allowed):
    # Written out here, not read from the table under test: a job rides out transient AWS
    # failures itself, so re-encrypting never becomes degraded.
    connection = ByokConnection.objects.create(
        organization=OrganizationFactory(),
        aws_account_id=CUSTOMER_ACCOUNT,
        location="us",
        state=S.REENCRYPTING,
    )
    if allowed:
        assert transition(connection, target).state == target
    else:
        with pytest.raises(TransitionNotAllowed):
            transition(connection, target)


# --- Who may request, and when ---------------------------------------------------------------


def test_admin_requests_re_encryption_by_the_replacement_alias(byok, rep):
    req = reencryption.request_reencryption(org=byok.org, actor=byok.admin)
    assert req.status == "submitted"
    assert req.key_alias == REPLACEMENT_KEY_ALIAS and req.requested_key_arns == {}
    assert req.mode == "rewrap" and req.scheduled_for is None
    event = AuditEvent.objects.get(event_name="RequestReencryption")
    assert event.principal == byok.admin.email and event.organization == byok.org


@pytest.mark.parametrize(
    "state", [S.PENDING, S.DEGRADED, S.REVOKED, S.RESTORING, S.EXPIRED, S.REENCRYPTING]
)
def test_request_is_refused_unless_the_connection_is_active(byok, state):
    ByokConnection.objects.filter(pk=byok.connection.pk).update(state=state)
    with pytest.raises(reencryption.ReencryptionRefused, match="only be requested while"):
        reencryption.request_reencryption(org=byok.org, actor=byok.admin)
    assert not ReencryptionRequest.objects.exists()


def test_only_one_open_request_at_a_time(byok, rep):
    first = reencryption.request_reencryption(org=byok.org, actor=byok.admin)
    with pytest.raises(reencryption.ReencryptionRefused, match=f"#{first.pk} is still submitted"):
        reencryption.request_reencryption(org=byok.org, actor=byok.admin)
    reencryption.claim_reencryption_request(request_id=first.pk, rep=rep)
    reencryption.reject_reencryption_request(request_id=first.pk, rep=rep, reason="Use ARNs")
    assert reencryption.request_reencryption(org=byok.org, actor=byok.admin).pk != first.pk


def test_request_page_wants_two_factor_and_a_recent_sign_in(client, byok):
    client.force_login(byok.admin)
    response = client.get(reverse("reencryption:request", args=[byok.org.pk]))
    assert response.status_code == 302 and "/accounts/2fa/" in response["Location"]


def test_member_gets_403_and_an_outsider_404_on_the_re_encryption_page(client, byok):
    url = reverse("reencryption:request", args=[byok.org.pk])
    login_verified(client, org_member(byok.org))
    assert client.get(url).status_code == 403
    login_verified(client, org_admin())
    assert client.get(url).status_code == 404
    assert (
        client.post(url, {"key_source": "alias", "when": "now", "mode": "rewrap"}).status_code
        == 404
    )
    assert not ReencryptionRequest.objects.exists()


def test_admin_sees_the_replacement_kit_and_submits_through_the_page(client, byok):
    login_verified(client, byok.admin)
    url = reverse("reencryption:request", args=[byok.org.pk])
    page = client.get(url).content.decode()
    assert "byok-us-us-east-1-next.template.json" in page
    assert REPLACEMENT_KEY_ALIAS in page
    template = client.get(reverse("reencryption:template", args=[byok.org.pk, "us-west-2"]))
    assert template.status_code == 200 and REPLACEMENT_KEY_ALIAS in template.content.decode()
    assert "AWS::IAM::Role" not in template.content.decode()  # the role exists already
    response = client.post(
        url, {"key_source": "alias", "when": "now", "mode": "rotate", "window_timezone": "UTC"}
    )
    req = ReencryptionRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("reencryption:detail", args=[byok.org.pk, req.pk])
    assert req.mode == "rotate"
    other = org_admin()
    client.force_login(other)
    assert client.get(response["Location"]).status_code == 404


def test_an_invalid_request_saves_nothing_and_says_why(client, byok):
    login_verified(client, byok.admin)
    response = client.post(
        reverse("reencryption:request", args=[byok.org.pk]),
        {
            "key_source": "alias",
            "when": "window",
            "window_date": "2020-01-01",
            "window_time": "03:00",
            "window_timezone": "Europe/Berlin",
            "mode": "rewrap",
        },
    )
    assert response.status_code == 200
    assert "must start in the future" in response.content.decode()
    assert not ReencryptionRequest.objects.exists()
    assert not AuditEvent.objects.filter(event_name="RequestReencryption").exists()


# --- Window and key validation ---------------------------------------------------------------


def form(byok, **data):
    base = {"key_source": "alias", "when": "window", "mode": "rewrap", "window_timezone": "UTC"}
    return ReencryptionRequestForm({**base, **data}, connection=byok.connection)


@freeze_time("2026-03-20 12:00:00")
@pytest.mark.parametrize(
    "data, field, message",
    [
        ({}, "window_date", "Choose the date"),
        ({"window_date": "2026-03-21"}, "window_time", "Choose the time"),
        ({"window_date": "2026-03-20", "window_time": "11:59"}, "window_date", "in the future"),
        (
            {"window_date": "2026-07-01", "window_time": "03:00"},
            "window_date",
            "within the next 90",
        ),
        # Europe/Berlin, last Sunday of March: 02:00 → 03:00 (02:30 never happens).
        (
            {
                "window_date": "2026-03-29",
                "window_time": "02:30",
                "window_timezone": "Europe/Berlin",
            },
            "window_time",
            "does not exist",
        ),
        # Europe/Berlin, last Sunday of October: 03:00 → 02:00 (02:30 happens twice).
        (
            {
                "window_date": "2026-10-25",
                "window_time": "02:30",
                "window_timezone": "Europe/Berlin",
            },
            "window_time",
            "happens twice",
        ),
        ({"window_date": "2026-03-21", "window_time": "25:00"}, "window_time", "valid time"),
        (
            {
                "window_date": "2026-03-21",
                "window_time": "03:00",
                "window_timezone": "Mars/Olympus",
            },
            "window_timezone",
            "valid choice",
        ),
    ],
)
def test_maintenance_window_is_validated_with_clear_errors(byok, data, field, message):
    f = form(byok, **data)
    assert not f.is_valid()
    assert message in " ".join(f.errors[field]), f.errors


@freeze_time("2026-03-20 12:00:00")
def test_window_is_read_in_its_time_zone_and_stored_in_utc(byok):
    f = form(byok, window_date="2026-03-21", window_time="09:30", window_timezone="Asia/Tokyo")
    assert f.is_valid(), f.errors
    assert f.cleaned_data["scheduled_for"] == datetime.datetime(
        2026, 3, 21, 0, 30, tzinfo=datetime.UTC
    )
    now = form(byok, when="now")
    assert now.is_valid(), now.errors
    assert now.cleaned_data["scheduled_for"] is None


def test_window_in_the_past_is_refused_by_the_service_too(byok):
    with pytest.raises(reencryption.ReencryptionRefused, match="future"):
        reencryption.request_reencryption(
            org=byok.org,
            actor=byok.admin,
            scheduled_for=timezone.now() - datetime.timedelta(minutes=1),
        )


def test_key_arns_must_be_key_arns_of_the_region_and_account_and_new(byok, new_keys):
    good = new_keys
    bad = {
        "us-east-1": f"arn:aws:kms:us-east-1:{CUSTOMER_ACCOUNT}:alias/whatever",
        "us-west-2": good["us-east-1"],  # a key of the other region
    }
    f = form(byok, when="now", key_source="arns", **{f"key_arn_{r}": a for r, a in bad.items()})
    assert not f.is_valid()
    assert "not a KMS key ARN" in f.errors["key_arn_us-east-1"][0]
    assert "in us-east-1, not in us-west-2" in f.errors["key_arn_us-west-2"][0]
    other_account = good["us-east-1"].replace(CUSTOMER_ACCOUNT, "999988887777")
    current = byok.arns["us-west-2"]
    f = form(
        byok,
        when="now",
        key_source="arns",
        **{"key_arn_us-east-1": other_account, "key_arn_us-west-2": current},
    )
    assert not f.is_valid()
    assert "account 999988887777" in f.errors["key_arn_us-east-1"][0]
    assert "current keys" in f.errors["key_arn_us-west-2"][0]
    f = form(byok, when="now", key_source="arns", **{f"key_arn_{r}": a for r, a in good.items()})
    assert f.is_valid(), f.errors
    assert f.cleaned_data["key_arns"] == good


# --- The rep's review ---------------------------------------------------------------------------


def test_preflight_of_the_new_keys_passes_and_approval_pins_their_arns(
    byok, rep, new_keys, django_capture_on_commit_callbacks
):
    req = claimed_with_preflight(byok, rep, django_capture_on_commit_callbacks)
    run = req.preflights.get()
    assert run.status == "passed"
    assert run.key_arns == new_keys
    names = {c["name"] for c in run.checks}
    assert {"role", "key-found", "round-trip", "key-new", "key-account", "re-encrypt"} <= names
    with django_capture_on_commit_callbacks(execute=False):
        reencryption.approve_reencryption_request(request_id=req.pk, rep=rep)
    req.refresh_from_db()
    assert req.status == "approved" and req.key_arns == new_keys
    assert ReencryptionJob.objects.get(request=req).state == J.SCHEDULED
    assert AuditEvent.objects.filter(event_name="ApproveReencryption").exists()
    assert AuditEvent.objects.filter(event_name="ReEncrypt", kind="key-usage").count() == 2


def test_preflight_fails_when_no_replacement_key_exists_and_approval_is_refused(
    byok, rep, django_capture_on_commit_callbacks
):
    req = claimed_with_preflight(byok, rep, django_capture_on_commit_callbacks)
    run = req.preflights.get()
    assert run.status == "failed"
    failing = [c for c in run.checks if not c["passed"]]
    assert {c["region"] for c in failing} == set(REGIONS)
    assert REPLACEMENT_KEY_ALIAS in failing[0]["remediation"]
    with pytest.raises(reencryption.ReencryptionRefused, match="passing preflight"):
        reencryption.approve_reencryption_request(request_id=req.pk, rep=rep)
    assert not ReencryptionJob.objects.exists()


def test_preflight_fails_when_the_new_alias_points_at_the_current_key(
    byok, rep, django_capture_on_commit_callbacks
):
    for region in REGIONS:
        byok.aws.kms(region).create_alias(
            AliasName=REPLACEMENT_KEY_ALIAS, TargetKeyId=byok.arns[region]
        )
    req = claimed_with_preflight(byok, rep, django_capture_on_commit_callbacks)
    run = req.preflights.get()
    assert run.status == "failed"
    assert {c["cause"] for c in run.checks if not c["passed"]} == {"key-in-use"}


def test_preflight_by_key_arns_checks_exactly_those_keys(
    byok, rep, new_keys, django_capture_on_commit_callbacks
):
    other = {r: byok.aws.create_key(r, alias=None) for r in REGIONS}
    req = claimed_with_preflight(byok, rep, django_capture_on_commit_callbacks, key_arns=other)
    run = req.preflights.get()
    assert run.status == "passed" and run.key_arns == other


def test_only_the_assignee_acts_and_a_rejection_needs_a_reason(
    byok, rep, new_keys, django_capture_on_commit_callbacks
):
    req = reencryption.request_reencryption(org=byok.org, actor=byok.admin)
    with pytest.raises(reencryption.ReencryptionRefused, match="claim it first"):
        reencryption.start_reencryption_preflight(request_id=req.pk, actor=rep)
    reencryption.claim_reencryption_request(request_id=req.pk, rep=rep)
    other = staff_user(ACCOUNT_REPS)
    with pytest.raises(reencryption.ReencryptionRefused, match="already claimed"):
        reencryption.claim_reencryption_request(request_id=req.pk, rep=other)
    for action in (
        lambda: reencryption.start_reencryption_preflight(request_id=req.pk, actor=other),
        lambda: reencryption.approve_reencryption_request(request_id=req.pk, rep=other),
        lambda: reencryption.reject_reencryption_request(request_id=req.pk, rep=other, reason="x"),
    ):
        with pytest.raises(reencryption.ReencryptionRefused, match="Only the assignee"):
            action()
    with pytest.raises(reencryption.ReencryptionRefused, match="reason"):
        reencryption.reject_reencryption_request(request_id=req.pk, rep=rep, reason="  ")
    with django_capture_on_commit_callbacks(execute=True):
        reencryption.reject_reencryption_request(request_id=req.pk, rep=rep, reason="Wrong account")
    req.refresh_from_db()
    assert req.status == "rejected" and req.rejection_reason == "Wrong account"
    assert any("Wrong account" in m.body and byok.admin.email in m.to for m in mail.outbox)


def test_staff_pages_are_for_account_reps_only_and_list_re_encryptions(client, byok, rep):
    req = reencryption.request_reencryption(org=byok.org, actor=byok.admin)
    detail = reverse("reencryption:staff-detail", args=[req.pk])
    login_staff(client, staff_user(SUPPORT_STAFF))
    assert client.get(detail).status_code == 403
    assert client.post(reverse("reencryption:staff-claim", args=[req.pk])).status_code == 403
    client.force_login(byok.admin)
    assert client.get(detail).status_code == 403
    login_staff(client, rep)
    queue = client.get(reverse("review:queue")).content.decode()
    assert f"Re-encryption #{req.pk}" in queue and "Acme Re" in queue
    client.post(reverse("reencryption:staff-claim", args=[req.pk]))
    assert ReencryptionRequest.objects.get(pk=req.pk).assignee == rep
    assert "Run preflight" in client.get(detail).content.decode()


# --- The job ---------------------------------------------------------------------------------


def test_approved_job_rewraps_verifies_retires_and_tells_the_admin(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    deks = DataKey.objects.count()
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, run=True)
    assert job.state == J.COMPLETED, (job.state_reason, job.last_error)
    assert (job.done, job.total) == (deks, deks)
    assert job.verified == job.verify_total == len(records)
    byok.connection.refresh_from_db()
    assert byok.connection.state == S.ACTIVE
    old, new = old_and_new(byok)
    assert {k.key_arn for k in new} == set(new_keys.values())
    assert all(k.generation == 2 and k.retired_at is None for k in new)
    assert all(k.generation == 1 and k.retired_at is not None for k in old)
    # Every DEK: exactly one live wrapping per new key, none under the old keys.
    live = DataKeyWrapping.objects.filter(retired_at=None)
    assert live.filter(regional_key__in=old).count() == 0
    assert live.filter(regional_key__in=new).count() == deks * len(REGIONS)
    assert all_readable(records)
    assert ReencryptionRequest.objects.get().status == "completed"
    # KMS work is proportional to data keys, not records: a ReEncrypt per DEK and region.
    reencrypts = AuditEvent.objects.filter(event_name="ReEncrypt", kind="key-usage")
    assert reencrypts.count() == 2 + deks * len(REGIONS)  # 2 from the preflight
    for event in reencrypts:  # the context and both keys, as CloudTrail records a ReEncrypt
        params = event.record["requestParameters"]
        assert params["encryptionContext"]["org"] == str(byok.org.pk)
        assert params["sourceKeyId"] in byok.arns.values()
        assert params["destinationKeyId"] in new_keys.values()
    steps = set(AuditEvent.objects.filter(kind="portal").values_list("event_name", flat=True))
    assert {
        "StartReencryption",
        "RewrapDataKeys",
        "VerifyReencryption",
        "CompleteReencryption",
    } <= steps
    notice = next(m for m in mail.outbox if "old keys may be disabled" in m.subject)
    assert byok.admin.email in notice.to
    assert byok.arns["us-east-1"] in notice.body and new_keys["us-east-1"] in notice.body


def test_full_rotation_re_encrypts_every_record_under_new_data_keys(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    old_deks = set(DataKey.objects.values_list("pk", flat=True))
    versions = dict(AppRecord.objects.values_list("pk", "version"))
    job = approved_job(
        byok, rep, django_capture_on_commit_callbacks, run=True, mode="rotate", batch_size=5
    )
    assert job.state == J.COMPLETED, (job.state_reason, job.last_error)
    assert job.done == job.total == len(records)
    assert not AppRecord.objects.filter(data_key_id__in=old_deks).exists()
    destroyed = DataKey.objects.filter(pk__in=old_deks)
    assert all(d.destroyed_at is not None for d in destroyed)
    assert not DataKeyWrapping.objects.filter(data_key_id__in=old_deks).exists()
    _old, new = old_and_new(byok)
    for dek in DataKey.objects.exclude(pk__in=old_deks):
        assert {w.regional_key_id for w in dek.wrappings.all()} == {k.pk for k in new}
    assert dict(AppRecord.objects.values_list("pk", "version")) == versions
    assert all_readable(records)


def test_new_writes_use_new_data_keys_under_the_new_keys_at_once(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    app = byok.apps[0]
    warm = next(pk for pk, (a, _) in records.items() if a == app)
    read_record(app_instance=app, record_id=warm)  # this process caches a writing key
    store_record(app_instance=app, kind="issue", plaintext=b"before")
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=1)
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job)  # the switch only
    assert job.phase == "rewrap" and job.done == 0
    record = store_record(app_instance=app, kind="issue", plaintext=b"after the switch")
    wrapped_under = set(
        DataKeyWrapping.objects.filter(data_key_id=record.data_key_id).values_list(
            "regional_key__key_arn", flat=True
        )
    )
    assert wrapped_under == set(new_keys.values())
    assert record.data_key_id > job.dek_watermark


def test_another_process_stops_writing_with_its_cached_key_within_the_guard_ttl(byok, monkeypatch):
    class Clock:
        now = 1000.0

        def __call__(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(dek_cache.GUARD, "clock", clock)
    monkeypatch.setattr(dek_cache.CACHE, "clock", clock)
    app = byok.apps[0]
    first = store_record(app_instance=app, kind="issue", plaintext=b"one").data_key_id
    # Elsewhere (another process) the app's current DEK is replaced in the database.
    DataKey.objects.filter(pk=first).update(is_current=False)
    assert store_record(app_instance=app, kind="issue", plaintext=b"two").data_key_id == first
    clock.now += dek_cache.GUARD.ttl_s + 0.01
    third = store_record(app_instance=app, kind="issue", plaintext=b"three").data_key_id
    assert third != first


def test_every_record_stays_readable_in_the_middle_of_the_job(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job, 3)  # switch + two batches: 4 of 6 DEKs re-wrapped
    assert job.state == J.RUNNING and 0 < job.done < job.total
    assert byok.connection.__class__.objects.get(pk=byok.connection.pk).state == S.REENCRYPTING
    assert all_readable(records)
    new = store_record(app_instance=byok.apps[1], kind="comment", plaintext=b"mid-job")
    records[new.pk] = (byok.apps[1], b"mid-job")
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job, 50)
    assert job.state == J.COMPLETED
    assert job.verified == len(records)  # the record written mid-job was verified too
    assert all_readable(records)


def test_revoke_during_the_job_pauses_it_and_restore_resumes_it(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job, 2)
    done_before = job.done
    assert 0 < done_before < job.total
    with django_capture_on_commit_callbacks(execute=True):
        revocation.revoke_key_access(org=byok.org, actor=byok.admin, reason="Drill mid-job")
    job.refresh_from_db()
    assert job.state == J.PAUSED and "revoked" in job.state_reason
    assert AuditEvent.objects.filter(event_name="PauseReencryption").exists()
    # A run (a redelivered message, the sweeper) does nothing while access is revoked …
    assert reencryption_job.run_job(job_id=job.pk) == J.PAUSED
    assert reencryption_job.sweep_jobs() == []
    job.refresh_from_db()
    assert job.done == done_before
    # … and reads are refused, as for any revocation.
    with pytest.raises(AppSuspended):
        app, _text = next(iter(records.values()))
        read_record(app_instance=app, record_id=next(iter(records)))
    # Restore checks both key generations, returns to re-encrypting and resumes the job.
    with django_capture_on_commit_callbacks(execute=True):
        revocation.request_restore(org=byok.org, actor=byok.admin)
    connection = ByokConnection.objects.get(pk=byok.connection.pk)
    checked = {(c["region"], c["name"]) for c in connection.restore_checks}
    assert len([c for c in connection.restore_checks if c["name"] == "Key enabled"]) == 4
    assert ("us-east-1", "Existing data keys unwrap") in checked
    restored = AuditEvent.objects.get(event_name="VerifyRestoreKeyAccess")
    assert restored.record["responseElements"]["state"] == S.REENCRYPTING  # not active
    job.refresh_from_db()
    assert job.state == J.COMPLETED, (job.state_reason, job.last_error)
    assert ByokConnection.objects.get(pk=byok.connection.pk).state == S.ACTIVE
    assert AuditEvent.objects.filter(event_name="ResumeReencryption").exists()
    assert all_readable(records)


def test_restore_without_a_paused_job_ends_active(byok, records):
    assert not reencryption_job.return_to_reencrypting_after_restore(byok.connection)
    assert ByokConnection.objects.get(pk=byok.connection.pk).state == S.ACTIVE


def test_a_crashed_run_resumes_from_its_checkpoint_and_rerunning_is_harmless(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks, monkeypatch
):
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job, 2)  # switch + one batch
    checkpoint, done = job.last_id, job.done
    assert done == 2
    # A worker dies in the middle of the next batch: KMS calls made, nothing committed,
    # its lease left behind (its pid no longer exists).
    reencrypt_events = AuditEvent.objects.filter(event_name="ReEncrypt", kind="key-usage")
    events_before = reencrypt_events.count()
    calls: list[str] = []  # every ReEncrypt sent to KMS, counted at the botocore layer
    monkeypatch.setattr(
        aws, "EVENT_HOOKS", [("before-send.kms.ReEncrypt", lambda **kw: calls.append("call"))]
    )
    original = job_runner.Runner._commit

    def crash(self, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(job_runner.Runner, "_commit", crash)
    with pytest.raises(SystemExit):
        reencryption_job.run_job(job_id=job.pk)
    monkeypatch.setattr(job_runner.Runner, "_commit", original)
    ReencryptionJob.objects.filter(pk=job.pk).update(
        lease_token="dead", lease_pid=2**22 + 7, lease_host=job_lease.holder()[0]
    )
    job.refresh_from_db()
    assert (job.last_id, job.done) == (checkpoint, done)  # the crashed batch left no trace
    # ... but the calls it made in the customer's account were recorded before its checkpoint.
    assert len(calls) == 2 * len(REGIONS)
    assert reencrypt_events.count() == events_before + len(calls)
    with django_capture_on_commit_callbacks(execute=True):
        assert reencryption_job.run_job(job_id=job.pk) == J.COMPLETED
    # The crashed batch was redone: its calls were made (and recorded) twice, exactly.
    assert reencrypt_events.count() == events_before + len(calls)
    job.refresh_from_db()
    assert job.done == job.total
    per_key = DataKeyWrapping.objects.filter(regional_key__is_current=True).values_list(
        "data_key_id", "regional_key_id"
    )
    assert len(per_key) == len(set(per_key)) == DataKey.objects.count() * len(REGIONS)
    assert all_readable(records)
    before = (AuditEvent.objects.count(), DataKeyWrapping.objects.count())
    assert reencryption_job.run_job(job_id=job.pk) == J.COMPLETED  # once more: nothing happens
    assert (AuditEvent.objects.count(), DataKeyWrapping.objects.count()) == before


def test_a_second_run_while_the_first_holds_a_live_lease_does_nothing(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job, 2)
    ReencryptionJob.objects.filter(pk=job.pk).update(
        lease_token="other", lease_host="another-host", lease_pid=1, heartbeat_at=timezone.now()
    )
    assert reencryption_job.run_job(job_id=job.pk) == J.RUNNING
    assert ReencryptionJob.objects.get(pk=job.pk).done == job.done
    assert reencryption_job.sweep_jobs() == []
    # A heartbeat older than the lease lets the sweeper (or a redelivery) take over.
    ReencryptionJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - datetime.timedelta(minutes=10)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert reencryption_job.sweep_jobs() == [job.pk]
    assert ReencryptionJob.objects.get(pk=job.pk).state == J.COMPLETED


def test_a_window_job_waits_until_due_then_the_sweeper_starts_it(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    start = timezone.now() + datetime.timedelta(hours=2)
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, run=True, scheduled_for=start)
    assert job.state == J.SCHEDULED and job.scheduled_for == start  # the early run did nothing
    assert reencryption_job.sweep_jobs() == []
    assert ByokConnection.objects.get(pk=byok.connection.pk).state == S.ACTIVE
    with freeze_time(start + datetime.timedelta(seconds=1)):
        with django_capture_on_commit_callbacks(execute=True):
            assert reencryption_job.sweep_jobs() == [job.pk]
    assert ReencryptionJob.objects.get(pk=job.pk).state == J.COMPLETED


def test_a_due_job_waits_while_the_connection_is_degraded(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    job = approved_job(byok, rep, django_capture_on_commit_callbacks)
    ByokConnection.objects.filter(pk=byok.connection.pk).update(state=S.DEGRADED)
    job = step(job)
    assert job.state == J.SCHEDULED and "degraded" in job.state_reason
    ByokConnection.objects.filter(pk=byok.connection.pk).update(state=S.ACTIVE)
    with django_capture_on_commit_callbacks(execute=True):
        assert reencryption_job.run_job(job_id=job.pk) == J.COMPLETED


def test_a_key_disabled_in_aws_mid_job_revokes_and_pauses(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks, settings
):
    settings.REENCRYPTION_KEY_CHECK_INTERVAL_S = 0
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job, 2)
    byok.aws.disable_key("us-west-2", byok.arns["us-west-2"])
    with django_capture_on_commit_callbacks(execute=True):
        assert reencryption_job.run_job(job_id=job.pk) == J.PAUSED
    connection = ByokConnection.objects.get(pk=byok.connection.pk)
    assert connection.state == S.REVOKED and "us-west-2" in connection.state_reason
    old = RegionalKey.objects.get(key_arn=byok.arns["us-west-2"])
    assert old.status == "disabled"
    assert RegionalKey.objects.get(key_arn=new_keys["us-west-2"]).status == "enabled"


def test_aws_throttling_keeps_the_job_running_and_it_resumes_later(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks, inject_aws_error, settings
):
    settings.REENCRYPTION_TRANSIENT_BACKOFF_S = 0
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job)
    hooks = list(aws.EVENT_HOOKS)
    inject_aws_error("kms.ReEncrypt", code="ThrottlingException", status=400)
    assert reencryption_job.run_job(job_id=job.pk) == J.RUNNING
    job.refresh_from_db()
    assert job.done == 0 and "did not answer" in job.last_error and not job.lease_token
    aws.EVENT_HOOKS[:] = hooks
    with django_capture_on_commit_callbacks(execute=True):
        assert reencryption_job.sweep_jobs() == [job.pk]
    assert ReencryptionJob.objects.get(pk=job.pk).state == J.COMPLETED
    assert all_readable(records)


def test_a_record_that_does_not_decrypt_fails_verification_and_nothing_is_retired(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    victim = AppRecord.objects.order_by("pk").first()
    blob = bytearray(victim.ciphertext)
    blob[-1] ^= 1
    AppRecord.objects.filter(pk=victim.pk).update(ciphertext=bytes(blob))
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, run=True)
    assert job.state == J.FAILED and f"#{victim.pk}" in job.state_reason
    assert ByokConnection.objects.get(pk=byok.connection.pk).state == S.ACTIVE
    assert not RegionalKey.objects.exclude(retired_at=None).exists()
    assert not DataKeyWrapping.objects.exclude(retired_at=None).exists()
    assert ReencryptionRequest.objects.get().status == "failed"
    del records[victim.pk]
    assert all_readable(records)  # the others, under either key generation
    assert any("Do NOT disable" in m.body for m in mail.outbox)


def test_expiry_ends_a_paused_job(byok, rep, new_keys, records, django_capture_on_commit_callbacks):
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        step(job, 2)
        revocation.revoke_key_access(org=byok.org, actor=byok.admin, reason="gone")
    ByokConnection.objects.filter(pk=byok.connection.pk).update(
        restore_deadline=timezone.now() - datetime.timedelta(seconds=1)
    )
    revocation.expire_overdue_connections()
    job.refresh_from_db()
    assert job.state == J.FAILED and "restore window" in job.state_reason


def test_admin_cancels_before_the_job_starts_but_not_after(
    client, byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    job = approved_job(
        byok,
        rep,
        django_capture_on_commit_callbacks,
        scheduled_for=timezone.now() + datetime.timedelta(hours=1),
    )
    client.force_login(byok.admin)
    url = reverse("reencryption:cancel", args=[byok.org.pk, job.request_id])
    client.post(url, {"confirm": "on"})
    job.refresh_from_db()
    assert job.state == J.CANCELLED and job.request.status == "cancelled"
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        step(job, 2)
    with pytest.raises(reencryption.ReencryptionRefused, match="started"):
        reencryption.cancel_reencryption_request(
            org=byok.org, request_id=job.request_id, actor=byok.admin
        )


# --- Progress pages ------------------------------------------------------------------------------


def test_progress_is_shown_live_to_the_admin_and_the_rep(
    client, byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job, 3)
    client.force_login(byok.admin)
    fragment = client.get(
        reverse("reencryption:progress", args=[byok.org.pk, job.request_id])
    ).content.decode()
    assert f"{job.done} of {job.total} data keys" in fragment
    assert "data-poll-done" not in fragment and "Rate" in fragment and "Time left" in fragment
    login_verified(client, byok.admin)
    page = client.get(reverse("reencryption:request", args=[byok.org.pk])).content.decode()
    assert 'data-poll-url="/orgs/' in page and "Previous, still in use" in page
    login_staff(client, rep)
    staff = client.get(reverse("reencryption:staff-progress", args=[job.request_id])).content
    assert b"KMS calls" in staff
    with django_capture_on_commit_callbacks(execute=True):
        step(job, 50)
    login_verified(client, byok.admin)
    fragment = client.get(
        reverse("reencryption:progress", args=[byok.org.pk, job.request_id])
    ).content.decode()
    assert "data-poll-done" in fragment and "Completed" in fragment and "100%" in fragment
    history = client.get(reverse("reencryption:request", args=[byok.org.pk])).content.decode()
    assert f"#{job.request_id}" in history and "Retired" in history


def test_preflight_run_model_statuses_are_shared():
    assert ReencryptionPreflight._meta.get_field("status").choices == PreflightRun.Status.choices


def test_after_re_encryption_a_new_setup_request_is_checked_on_the_new_keys(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    from setup import services
    from setup.preflight import start_preflight

    job = approved_job(byok, rep, django_capture_on_commit_callbacks, run=True)
    assert job.state == J.COMPLETED
    # The setup alias still points at the old keys (the customer may disable them now).
    req = services.submit_setup_request(
        org=byok.org,
        actor=byok.admin,
        aws_account_id=CUSTOMER_ACCOUNT,
        site_name="acme-more",
        location="us",
        apps=["jsm"],
    )
    services.claim_setup_request(request_id=req.pk, rep=rep)
    with django_capture_on_commit_callbacks(execute=True):
        run = start_preflight(setup_request=req, actor=rep)
    run.refresh_from_db()
    assert run.status == "passed" and run.key_arns == new_keys
    with django_capture_on_commit_callbacks(execute=True):
        services.provision_setup_request(request_id=req.pk, rep=rep)
    jsm = AppInstance.objects.get(site__name="acme-more")
    assert jsm.status == "active"
    wrapped_under = set(
        DataKeyWrapping.objects.filter(data_key__app_instance=jsm).values_list(
            "regional_key__key_arn", flat=True
        )
    )
    assert wrapped_under == set(new_keys.values())


def test_revoking_one_app_pauses_the_job_saying_so_and_its_restore_resumes_it(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks
):
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, batch_size=2)
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job, 2)
    done_before = job.done
    app = byok.apps[0]
    with django_capture_on_commit_callbacks(execute=True):
        scope = revocation.revoke_scope(
            org=byok.org, actor=byok.admin, scope=revocation.Scope.app(app.pk), reason="leak"
        )
    job.refresh_from_db()
    assert job.state == J.PAUSED
    assert f"{app.get_app_display()} on {app.site.name} is revoked" in job.state_reason
    # Redelivered or swept, it waits: nothing is skipped, nothing retired, no noise.
    assert reencryption_job.run_job(job_id=job.pk) == J.PAUSED
    job.refresh_from_db()
    assert job.done == done_before
    assert AuditEvent.objects.filter(event_name="PauseReencryption").count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        revocation.restore_scope(org=byok.org, actor=byok.admin, revocation_id=scope.pk)
    job.refresh_from_db()
    assert job.state == J.COMPLETED, (job.state_reason, job.last_error)
    assert all_readable(records)
