"""Re-encryption survives a crash: a real worker process is SIGKILLed in the middle of the job,
started again, and the job resumes from its checkpoint (PostgreSQL, Redis, moto server).

The job is throttled (one data key per batch, a pause between batches) so that the kill lands
deterministically between its first and its last batch.

Who restarts the job after the crash: the beat sweeper
(``reencryption.tasks.sweep_reencryption_jobs``,
every minute in production), which finds the job running with the lease of a dead process.
Redis would also redeliver the unacked message, but kombu's Redis transport looks for expired
deliveries only every ``unacked_restore_interval × unacked_restore_throttle`` (100 s by
default) whatever ``CELERY_VISIBILITY_TIMEOUT_S`` says, so the test sends the sweeper's tick
itself instead of waiting for it. A late redelivery finds the job finished (or leased) and
does nothing.
"""

import time

import pytest
from django.conf import settings

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


def _plaintexts(org) -> dict[int, bytes]:
    dek_cache.purge_all()
    return {
        r.pk: read_record(app_instance=r.app_instance_id, record_id=r.pk)
        for r in AppRecord.objects.filter(app_instance__site__organization=org)
    }


def test_killed_worker_resumes_the_job_from_its_checkpoint(acme, celery_worker_process, wait_for):
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

    mid = wait_for(
        lambda: (j := job_now()).done >= 2 and j,
        timeout=60,
        interval=0.05,
        message=lambda: f"the job to start: {job_now().__dict__}\n{worker.log()[-3000:]}",
    )
    assert mid.state == "running" and mid.done < mid.total

    worker.kill()  # SIGKILL: no warm shutdown, no ack, the lease stays behind
    at_kill = job_now()
    assert at_kill.state == "running" and at_kill.lease_token and 0 < at_kill.done < at_kill.total
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

    # Resumed from the checkpoint, not from scratch: at most the batch in flight at the kill
    # (one data key, two regions) was re-wrapped twice.
    reencrypts = AuditEvent.objects.filter(
        organization=acme, event_name="ReEncrypt", kind="key-usage"
    ).count()
    preflight_calls = 2
    assert deks * 2 + preflight_calls <= reencrypts <= deks * 2 + preflight_calls + 2
    assert "run_reencryption_job_task" in worker.log()
