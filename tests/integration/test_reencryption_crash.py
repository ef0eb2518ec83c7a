"""Re-encryption survives a crash: a real worker process is SIGKILLed in the middle of the job,
started again, and the job resumes from its checkpoint (PostgreSQL, Redis, moto server).

The job is throttled (one data key per batch, a pause between batches), and the kill lands
deterministically at the worst moment: after a batch's KMS calls, inside its checkpoint (held
by a table lock of the test), so the checkpoint never commits. The KMS calls are counted at
moto's server: every ``ReEncrypt`` it answered must be exactly one key-usage event.

Who restarts the job after the crash: the beat sweeper
(``reencryption.tasks.sweep_reencryption_jobs``,
every minute in production), which finds the job running with the lease of a dead process.
Redis would also redeliver the unacked message, but kombu's Redis transport looks for expired
deliveries only every ``unacked_restore_interval × unacked_restore_throttle`` (100 s by
default) whatever ``CELERY_VISIBILITY_TIMEOUT_S`` says, so the test sends the sweeper's tick
itself instead of waiting for it. A late redelivery finds the job finished (or leased) and
does nothing.
"""

import threading
import time
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection, transaction

from audit.models import AuditEvent
from connections.models import ByokConnection, DataKey, DataKeyWrapping, RegionalKey
from dataplane import dek_cache
from dataplane.models import AppRecord
from dataplane.records import read_record, store_record
from demo import customer_side
from demo.acme import ACME_AWS_ACCOUNT, seed_demo_byok
from demo.seed import seed_demo_world
from orgs.models import AppInstance, User
from orgs.staff_roles import ACCOUNT_REPS
from reencryption import services as reencryption
from reencryption.models import ReencryptionJob, ReencryptionPreflight
from reencryption.tasks import sweep_reencryption_jobs
from setup.onboarding import REPLACEMENT_KEY_ALIAS
from tests.factories import staff_user

pytestmark = pytest.mark.django_db(transaction=True)

EXTRA_DEKS_PER_APP = 14
BATCH_INTERVAL_S = 0.3


@pytest.fixture
def acme(moto_reset):
    """Acme from the demo, with many data keys (each holding records) and replacement keys."""
    orgs = seed_demo_world()
    seed_demo_byok()
    org = orgs["Acme Corp"]
    apps = list(AppInstance.objects.filter(site__organization=org, encryption="byok"))
    for app in apps:
        for i in range(EXTRA_DEKS_PER_APP):
            DataKey.objects.filter(app_instance=app, is_current=True).update(is_current=False)
            dek_cache.purge_all()
            store_record(app_instance=app, kind="comment", plaintext=f"{app.app} #{i}".encode())
    connection = ByokConnection.objects.get(organization=org)
    customer_side.create_customer_side(
        account_id=ACME_AWS_ACCOUNT,
        location_code=connection.location,
        external_id=connection.external_id,
        vendor_principal_arn=settings.VENDOR_PRINCIPAL_ARN,
        alias=REPLACEMENT_KEY_ALIAS,
    )
    return org


@pytest.fixture
def kms_requests(moto_reset) -> Counter:
    """KMS requests moto's server answered, by operation: the calls that really happened in
    the customer's account, whoever made them (the worker process included)."""
    wsgi_server = moto_reset._server._server  # werkzeug's server, in this process
    app = wsgi_server.app
    seen: Counter = Counter()
    lock = threading.Lock()

    def counting(environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("TrentService."):
            with lock:
                seen[target.split(".", 1)[1]] += 1
        return app(environ, start_response)

    wsgi_server.app = counting
    try:
        yield seen
    finally:
        wsgi_server.app = app


def _waiting_for_lock_on(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass", [table]
        )
        return cursor.fetchone()[0]


def _plaintexts(org) -> dict[int, bytes]:
    dek_cache.purge_all()
    return {
        r.pk: read_record(app_instance=r.app_instance_id, record_id=r.pk)
        for r in AppRecord.objects.filter(app_instance__site__organization=org)
    }


def test_killed_worker_resumes_the_job_from_its_checkpoint(
    acme, kms_requests, celery_worker_process, wait_for
):
    worker = celery_worker_process
    before = _plaintexts(acme)
    deks = DataKey.objects.filter(app_instance__site__organization=acme).count()
    old_keys = set(
        RegionalKey.objects.filter(connection__organization=acme).values_list("pk", flat=True)
    )
    admin = User.objects.get(email="admin@acme.example")
    rep = staff_user(ACCOUNT_REPS)

    req = reencryption.request_reencryption(org=acme, actor=admin)
    reencryption.claim_reencryption_request(request_id=req.pk, rep=rep)
    run = reencryption.start_reencryption_preflight(request_id=req.pk, actor=rep)
    wait_for(
        lambda: ReencryptionPreflight.objects.get(pk=run.pk).status == "passed",
        timeout=60,
        message=lambda: (
            f"the worker's preflight: {ReencryptionPreflight.objects.get(pk=run.pk).checks}"
            + worker.log()[-2000:]
        ),
    )
    reencryption.approve_reencryption_request(
        request_id=req.pk, rep=rep, batch_size=1, batch_interval_s=BATCH_INTERVAL_S
    )
    job = ReencryptionJob.objects.get(request=req)

    def job_now():
        return ReencryptionJob.objects.get(pk=job.pk)

    def reencrypt_events() -> int:
        return AuditEvent.objects.filter(
            organization=acme, event_name="ReEncrypt", kind="key-usage"
        ).count()

    preflight_calls = 2  # ReEncrypt in each region
    mid = wait_for(
        lambda: (j := job_now()).done >= 2 and j,
        timeout=60,
        interval=0.05,
        message=lambda: f"the job to start: {job_now().__dict__}\n{worker.log()[-3000:]}",
    )
    assert mid.state == "running" and mid.done < mid.total

    # Kill the worker at the worst moment, deterministically: its batch's KMS calls made, its
    # checkpoint not committed. While this transaction holds the wrappings table, the next
    # checkpoint (which inserts the batch's new wrappings) cannot commit.
    wrappings_table = DataKeyWrapping._meta.db_table
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f'LOCK TABLE "{wrappings_table}" IN EXCLUSIVE MODE')
        held = wait_for(
            lambda: (
                _waiting_for_lock_on(wrappings_table) > 0
                and reencrypt_events() == preflight_calls + 2 * ((j := job_now()).done + 1)
                and j
            ),
            timeout=60,
            interval=0.05,
            message=lambda: (
                f"the worker to block in a checkpoint: {job_now().__dict__} "
                f"events={reencrypt_events()} calls={kms_requests}\n{worker.log()[-3000:]}"
            ),
        )
        worker.kill()  # SIGKILL: no warm shutdown, no ack, the lease stays behind
    at_kill = job_now()
    assert at_kill.done == held.done  # the batch in flight never committed its checkpoint
    assert at_kill.state == "running" and at_kill.lease_token and 0 < at_kill.done < at_kill.total
    # ... yet every KMS call it made is recorded: the events were committed before it.
    assert kms_requests["ReEncrypt"] == reencrypt_events()
    assert reencrypt_events() == preflight_calls + 2 * (at_kill.done + 1)
    time.sleep(1.0)
    assert job_now().done == at_kill.done  # nobody works on it while the worker is down

    # Reads keep working from this process while the job is interrupted.
    assert _plaintexts(acme) == before
    assert ByokConnection.objects.get(organization=acme).state == "re-encrypting"

    worker.start()
    sweeps_before = worker.log().count("sweep_reencryption_jobs")
    sweep_reencryption_jobs.delay()  # the beat's tick
    wait_for(
        lambda: job_now().lease_token not in ("", at_kill.lease_token),
        timeout=60,
        interval=0.1,
        message=lambda: (
            f"a new run to take the job over: {job_now().__dict__}\n{worker.log()[-3000:]}"
        ),
    )
    assert worker.log().count("sweep_reencryption_jobs") > sweeps_before
    done = wait_for(
        lambda: (j := job_now()).state in ("completed", "failed") and j,
        timeout=120,
        interval=0.2,
        message=lambda: (
            f"the job to finish after the restart: {job_now().__dict__}\n" + worker.log()[-4000:]
        ),
    )
    assert done.state == "completed", (done.state_reason, done.last_error)
    assert done.done == done.total == deks
    assert done.verified == done.verify_total == len(before)

    # No record lost or changed, every one decrypts (from a cold cache, new wrappings only).
    assert _plaintexts(acme) == before
    # No wrapping duplicated, none left live under the old keys, exactly one per new key.
    new_keys = set(done.new_keys.values())
    live = DataKeyWrapping.objects.filter(
        data_key__app_instance__site__organization=acme, retired_at=None
    )
    assert not live.filter(regional_key_id__in=old_keys).exists()
    pairs = list(live.values_list("data_key_id", "regional_key_id"))
    assert len(pairs) == len(set(pairs)) == deks * len(new_keys)
    assert set(
        RegionalKey.objects.filter(pk__in=old_keys).values_list("retired_at", flat=True)
    ) != {None}
    assert not RegionalKey.objects.filter(pk__in=old_keys, retired_at=None).exists()
    assert ByokConnection.objects.get(organization=acme).state == "active"

    # Resumed from the checkpoint, not from scratch: only the batch in flight at the kill
    # (one data key, two regions) was re-wrapped twice. Every ReEncrypt moto answered is one
    # key-usage event, exactly: the killed batch's calls and their repetition are both there.
    assert kms_requests["ReEncrypt"] == preflight_calls + 2 * deks + 2
    assert reencrypt_events() == kms_requests["ReEncrypt"]
    assert "run_reencryption_job_task" in worker.log()
