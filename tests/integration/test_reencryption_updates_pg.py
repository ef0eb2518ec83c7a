"""The rotation's batches on PostgreSQL: read in id order across the org's apps (the apps'
ids merged by the database), and written back in one set-based UPDATE (arrays in binary) that
writes each record only if the app did not change it meanwhile, also when the app's write is
in flight while the batch is written (the UPDATE waits for it, then skips that record)."""

import threading

import pytest
from django.db import connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from connections.models import DataKey
from dataplane.models import AppRecord
from orgs.models import AppInstance
from reencryption.job.base import RunnerBase, apply_updates
from reencryption.models import ReencryptionJob
from tests.factories import AppInstanceFactory, ReencryptionRequestFactory, SiteFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _backends_waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@pytest.fixture
def stored():
    """Three records of one app under an old data key, and the app's new data key."""
    app = AppInstanceFactory(encryption="byok")
    old = DataKey.objects.create(
        app_instance=app, encryption_context={"app": "jira"}, is_current=False
    )
    new = DataKey.objects.create(app_instance=app, encryption_context={"app": "jira"})
    records = [
        AppRecord.objects.create(
            app_instance=app, kind="issue", data_key=old, ciphertext=bytes([i]) * 40
        )
        for i in range(3)
    ]
    return records, old, new


def test_one_statement_writes_the_batch_unless_the_app_changed_a_record(stored):
    records, old, new = stored
    AppRecord.objects.filter(pk=records[1].pk).update(version=F("version") + 1)
    updates = [
        (r.pk, 1, old.pk, new.pk, b"\x00rotated " + bytes([i])) for i, r in enumerate(records)
    ]
    with transaction.atomic():
        assert apply_updates(updates) == 2
    after = {r.pk: (r.data_key_id, bytes(r.ciphertext)) for r in AppRecord.objects.all()}
    assert after[records[0].pk] == (new.pk, b"\x00rotated \x00")
    assert after[records[1].pk] == (old.pk, bytes([1]) * 40)  # the app's version stands
    assert after[records[2].pk] == (new.pk, b"\x00rotated \x02")


def test_an_app_write_in_flight_wins_over_the_batch(stored, wait_for):
    records, old, new = stored
    target = records[0]
    outcome: dict = {}
    committed = threading.Event()

    def write_batch() -> None:
        try:
            with transaction.atomic():
                outcome["written"] = apply_updates(
                    [(r.pk, 1, old.pk, new.pk, b"\x00rotated") for r in records]
                )
        except Exception as exc:  # noqa: BLE001 — reported by the assertion below
            outcome["error"] = exc
        finally:
            connections.close_all()
            committed.set()

    with transaction.atomic():
        # The app updates the record (its lock is held until it commits) ...
        AppRecord.objects.filter(pk=target.pk).update(
            ciphertext=b"\x00app's new content", data_key=new, version=F("version") + 1
        )
        worker = threading.Thread(target=write_batch)
        worker.start()
        # ... while the job's UPDATE of the batch waits for that lock.
        wait_for(lambda: _backends_waiting_on_locks() >= 1, timeout=10)
    assert committed.wait(timeout=30)
    worker.join(timeout=30)

    assert "error" not in outcome, outcome.get("error")
    assert outcome["written"] == 2
    kept = AppRecord.objects.get(pk=target.pk)
    assert (bytes(kept.ciphertext), kept.version) == (b"\x00app's new content", 2)
    assert set(AppRecord.objects.exclude(pk=target.pk).values_list("ciphertext", flat=True)) == {
        b"\x00rotated"
    }


def test_a_batch_is_the_orgs_next_records_in_id_order_across_its_apps():
    request = ReencryptionRequestFactory()
    org = request.organization
    site = SiteFactory(organization=org)
    apps = [AppInstanceFactory(site=site, app=app, encryption="byok") for app in ("jira", "jsm")]
    other = AppInstanceFactory(encryption="byok")  # another org's records interleave with these
    mine = []
    for i in range(12):
        owner = other if i % 3 == 2 else apps[i % 2]
        key = DataKey.objects.filter(app_instance=owner, is_current=True).first()
        key = key or DataKey.objects.create(app_instance=owner, encryption_context={})
        record = AppRecord.objects.create(
            app_instance=owner, kind="issue", data_key=key, ciphertext=b"\x00" * 40
        )
        if owner != other:
            mine.append(record.pk)
    job = ReencryptionJob.objects.create(
        request=request,
        connection=request.connection,
        mode="rotate",
        scheduled_for=timezone.now(),
        batch_size=3,
    )
    runner = RunnerBase(job.pk, "token")
    assert sorted(runner.app_ids) == sorted(
        AppInstance.objects.filter(site__organization=org).values_list("pk", flat=True)
    )
    batches, after = [], 0
    while rows := runner._records_after(after, upto=mine[-2], limit=3, fields=("pk",)):
        batches.append([pk for (pk,) in rows])
        after = rows[-1][0]
    assert batches == [mine[0:3], mine[3:6], mine[6:7]]
