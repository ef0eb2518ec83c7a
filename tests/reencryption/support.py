"""Helpers of the re-encryption tests (the fixtures are in conftest.py)."""

from __future__ import annotations

from connections.models import ConnectionState, DataKey, RegionalKey
from dataplane import dek_cache
from dataplane.records import read_record
from reencryption import job as reencryption_job
from reencryption import services as reencryption
from reencryption.models import ReencryptionJob, ReencryptionRequest

S = ConnectionState
J = ReencryptionJob.State
REGIONS = ("us-east-1", "us-west-2")


def new_data_key(app) -> None:
    """The next write of ``app`` creates a new DEK (as the daily rotation would)."""
    DataKey.objects.filter(app_instance=app, is_current=True).update(is_current=False)
    dek_cache.purge_all()


def all_readable(records) -> bool:
    dek_cache.purge_all()  # a cold process: every DEK is unwrapped from the stored wrappings
    return all(read_record(app_instance=a, record_id=pk) == t for pk, (a, t) in records.items())


def claimed_with_preflight(byok, rep, capture, **request_kwargs) -> ReencryptionRequest:
    req = reencryption.request_reencryption(org=byok.org, actor=byok.admin, **request_kwargs)
    reencryption.claim_reencryption_request(request_id=req.pk, rep=rep)
    with capture(execute=True):
        reencryption.start_reencryption_preflight(request_id=req.pk, actor=rep)
    return ReencryptionRequest.objects.get(pk=req.pk)


def approved_job(byok, rep, capture, *, run=False, **kwargs) -> ReencryptionJob:
    """Request, claim, preflight and approve; the job runs (eager Celery) only if ``run``."""
    approve = {k: kwargs.pop(k) for k in ("batch_size", "batch_interval_s") if k in kwargs}
    req = claimed_with_preflight(byok, rep, capture, **kwargs)
    assert req.preflights.get().status == "passed", req.preflights.get().checks
    with capture(execute=run):
        reencryption.approve_reencryption_request(request_id=req.pk, rep=rep, **approve)
    return ReencryptionJob.objects.get(request=req)


def step(job, n=1) -> ReencryptionJob:
    reencryption_job.run_job(job_id=job.pk, max_steps=n)
    return ReencryptionJob.objects.get(pk=job.pk)


def old_and_new(byok):
    keys = RegionalKey.objects.filter(connection=byok.connection)
    return keys.filter(is_current=False), keys.filter(is_current=True)
