"""Full rotation (mode ``rotate``) in batches: records read in id order across the org's apps,
old data keys unwrapped by the job, the batch written back in one set-based UPDATE that an
app's own write wins, and every KMS call of the job recorded (moto in-process, eager Celery)."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from connections import aws
from connections.models import DataKey
from dataplane import dek_cache
from dataplane.models import AppRecord
from dataplane.records import read_record, store_record, update_record
from reencryption import job as reencryption_job
from reencryption.job import base as job_base
from reencryption.job import runner as job_runner
from reencryption.job.lease import acquire, release
from reencryption.job.rotate import ROW_FIELDS
from reencryption.models import ReencryptionJob
from tests.reencryption.support import J, all_readable, approved_job, new_data_key, step

pytestmark = pytest.mark.django_db


def _interleaved(byok, n: int) -> dict[int, tuple]:
    """``n`` records written by the org's apps in turn (ids interleave), under two DEKs each."""
    out = {}
    for i in range(n):
        app = byok.apps[i % len(byok.apps)]
        if i == n // 2:
            for each in byok.apps:
                new_data_key(each)
        text = f"{app.app} record {i}".encode()
        out[store_record(app_instance=app, kind="comment", plaintext=text).pk] = (app, text)
    dek_cache.purge_all()
    return out


def test_batches_take_the_orgs_records_in_id_order_and_no_one_elses(
    byok, rep, new_keys, django_capture_on_commit_callbacks
):
    mine = _interleaved(byok, 9)
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, mode="rotate")
    token = acquire(job.pk)
    runner = job_runner.Runner(job.pk, token)
    try:
        ids = sorted(mine)
        rows = runner._records_after(0, upto=None, limit=4, fields=("pk", "app_instance_id"))
        assert [pk for pk, _app in rows] == ids[:4]
        rows = runner._records_after(ids[3], upto=ids[6], limit=4, fields=("pk",))
        assert [pk for (pk,) in rows] == ids[4:7]
        assert runner._records_after(ids[-1], upto=None, limit=4, fields=("pk",)) == []
    finally:
        runner.close()
        release(job.pk, token)


def test_rotation_in_small_batches_re_encrypts_interleaved_apps_exactly_once(
    byok, rep, new_keys, django_capture_on_commit_callbacks
):
    records = _interleaved(byok, 11)
    old_deks = set(DataKey.objects.values_list("pk", flat=True))
    job = approved_job(
        byok, rep, django_capture_on_commit_callbacks, run=True, mode="rotate", batch_size=3
    )
    assert job.state == J.COMPLETED, (job.state_reason, job.last_error)
    assert job.done == job.total == len(records) == job.verified
    assert not AppRecord.objects.filter(data_key_id__in=old_deks).exists()
    assert set(AppRecord.objects.values_list("version", flat=True)) == {1}
    assert all_readable(records)


def test_an_app_write_during_a_rotation_batch_wins(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks, monkeypatch
):
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, mode="rotate", batch_size=4)
    target = min(records)
    app, _text = records[target]
    original = job_runner.Runner._rotate_records
    written = []

    def app_writes_meanwhile(self, rows, job, **kwargs):
        updates = original(self, rows, job, **kwargs)
        if not written and any(row[0] == target for row in rows):
            # The app saves the record after the job read it, before the batch is written.
            update_record(record=AppRecord.objects.get(pk=target), plaintext=b"edited by the app")
            written.append(target)
        return updates

    monkeypatch.setattr(job_runner.Runner, "_rotate_records", app_writes_meanwhile)
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job, 100)
    assert written == [target]
    assert job.state == J.COMPLETED, (job.state_reason, job.last_error)
    record = AppRecord.objects.get(pk=target)
    assert record.version == 2  # the app's write, not overwritten by the job's stale copy
    dek_cache.purge_all()
    assert read_record(app_instance=app, record_id=target) == b"edited by the app"
    records[target] = (app, b"edited by the app")
    assert all_readable(records)
    assert job.verified == len(records)


def test_the_set_based_update_writes_only_records_nobody_changed(byok, records):
    first, second = sorted(records)[:2]
    rows = {
        r.pk: r for r in AppRecord.objects.filter(pk__in=[first, second]).select_related("data_key")
    }
    update_record(record=rows[second], plaintext=b"changed")
    changed = AppRecord.objects.get(pk=second)
    stale = [
        (pk, 1, rows[pk].data_key_id, rows[pk].data_key_id, b"\x01stale copy of the job")
        for pk in (first, second)
    ]
    assert job_base.apply_updates(stale) == 1
    assert bytes(AppRecord.objects.get(pk=first).ciphertext) == b"\x01stale copy of the job"
    kept = AppRecord.objects.get(pk=second)
    assert (bytes(kept.ciphertext), kept.version) == (bytes(changed.ciphertext), 2)
    assert job_base.apply_updates([]) == 0


def test_every_kms_call_of_a_rotation_is_one_key_usage_event(
    byok, rep, new_keys, records, django_capture_on_commit_callbacks, monkeypatch
):
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, mode="rotate", batch_size=5)
    known = set(AuditEvent.objects.values_list("pk", flat=True))
    calls: list[str] = []
    monkeypatch.setattr(
        aws,
        "EVENT_HOOKS",
        [("before-send.kms", lambda event_name, **kw: calls.append(event_name.rsplit(".", 1)[-1]))],
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = step(job, 100)
    assert job.state == J.COMPLETED, (job.state_reason, job.last_error)
    events = sorted(
        AuditEvent.objects.filter(kind="key-usage", event_source="kms.amazonaws.com")
        .exclude(pk__in=known)
        .values_list("event_name", flat=True)
    )
    assert events == sorted(calls)
    # Each old data key was unwrapped once by the job, from one of its stored copies.
    old = DataKey.objects.exclude(destroyed_at=None).count()
    assert calls.count("Decrypt") >= old > 0


def test_batches_are_cut_to_the_byte_budget_at_the_records_average_size(
    byok, rep, new_keys, settings, django_capture_on_commit_callbacks
):
    """Large records (attachments) make small batches, small ones large batches: the memory a
    batch holds stays near ``REENCRYPTION_ROTATE_BATCH_BYTES`` whatever the records' size."""
    settings.REENCRYPTION_ROTATE_BATCH_BYTES = 3 * 1100  # about three 1 KiB records
    records = {}
    for i in range(10):
        app = byok.apps[i % len(byok.apps)]
        text = bytes([65 + i]) * 1024
        records[store_record(app_instance=app, kind="attachment", plaintext=text).pk] = (app, text)
    dek_cache.purge_all()
    job = approved_job(byok, rep, django_capture_on_commit_callbacks, mode="rotate", batch_size=50)
    token = acquire(job.pk)
    runner = job_runner.Runner(job.pk, token)
    try:
        assert runner._record_batch_limit(job) == min(50, job_base.FIRST_RECORD_BATCH)
        rows = runner._records_after(0, upto=None, limit=4, fields=ROW_FIELDS)
        runner._note_record_sizes(rows, blob_at=ROW_FIELDS.index("ciphertext"))
        assert runner._record_batch_limit(job) == 3  # 3,300 bytes at ~1,061 bytes a record
        settings.REENCRYPTION_ROTATE_BATCH_BYTES = 16 << 20
        assert runner._record_batch_limit(job) == 50  # never more than the job's batch size
    finally:
        runner.close()
        release(job.pk, token)

    settings.REENCRYPTION_ROTATE_BATCH_BYTES = 3 * 1100
    reencryption_job.run_job(job_id=job.pk)
    done = ReencryptionJob.objects.get(pk=job.pk)
    assert done.state == J.COMPLETED, (done.state_reason, done.last_error)
    assert done.done == done.verified == len(records)
    assert all_readable(records)
