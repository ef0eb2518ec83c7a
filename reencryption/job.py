"""The re-encryption job: moves an organization's BYOK data to new KMS keys with apps online.

A job (:class:`~reencryption.models.ReencryptionJob`) belongs to one approved request. It runs in
steps; each step is one transaction on the job row (locked with ``select_for_update``) after
any AWS calls, which happen outside transactions. The job row is the checkpoint: phase,
``last_id`` / ``verify_last_id``, counters, rate. Nothing is kept in the task's result.

1. **Switch** (one transaction, connection ``active → re-encrypting``): the new regional keys
   become current (``generation + 1``); the old ones stay, not current, to unwrap what is not
   re-wrapped yet. Every app's current data key (DEK) stops being current, so the next write
   creates a DEK under the new keys (``GenerateDataKey``); other processes stop writing with
   their cached DEK within ``DEK_GUARD_TTL_S`` (``dataplane.dek_cache``: the guard follows the
   database's current DEK).
2. **Re-wrap** (mode ``rewrap``, the default): each DEK of the org gets a wrapped copy under
   each new key: KMS ``ReEncrypt`` in the same region (the DEK never leaves KMS in plaintext),
   ``Decrypt`` + ``Encrypt`` when a region had no copy. Records are not touched: the cost is
   proportional to DEKs, not records. Batches of ``batch_size`` DEKs, KMS calls in parallel
   (``REENCRYPTION_KMS_CONCURRENCY``).
   **Rotate** (mode ``rotate``, for a suspected DEK compromise): every record is decrypted and
   re-encrypted through the data plane under the app's current DEK, which the switch made new
   and which lives under the new keys. Conditional updates (``version`` and ``data_key``
   unchanged) let a concurrent app write win.
3. **Verify**: every DEK is unwrapped from its *new* wrapping in every region (the regions
   must agree) and every record is opened with it (AES-GCM authenticates each one). A DEK or
   record that appeared during the job and is not under the new keys yet is processed here.
   One failure fails the job, and nothing is retired.
4. **Retire** (one transaction, ``re-encrypting → active``): the invariants are checked again
   under the connection's lock; wrappings under the old keys are marked retired (reads ignore
   them), the old regional keys get ``retired_at``; in rotate mode the old DEKs, which no
   record uses any more, are destroyed (their wrapped copies erased). The org's admins are
   told the old keys may be disabled.

Reads never stop: until the retire step a DEK always has at least its old wrappings, and the
data plane unwraps with the newest generation first (``dataplane.records._unwrap``).

**Crashes and duplicates.** A run holds a lease on the job (token, host, pid, heartbeat). A
second delivery of the task finds the lease live and returns; a run that finds the lease of
a dead process (same host, pid gone) or a heartbeat older than ``REENCRYPTION_LEASE_S`` takes
over and continues from the checkpoint. Each batch commits only if the checkpoint is still the
one it started from, and wrappings are unique per (DEK, key), so a batch done twice changes
nothing. A beat task (:func:`sweep_jobs`) re-enqueues due or stranded jobs, so a lost message
never strands a job; ``apply_async(eta=…)`` starts it on time.

**Kill switch.** Revocation pauses the job in the revoking transaction
(:func:`pause_jobs_for_revocation`), and each step re-reads the connection state, so a run
stops at its next step. Restore puts a connection with a paused job back to
``re-encrypting`` (:func:`return_to_reencrypting_after_restore`, on the
``key_access_restored`` signal).
A KMS refusal met by the job (key disabled, access denied …) revokes like the data plane does.

Every step is an audit event of the org (``StartReencryption`` … ``CompleteReencryption``);
every AWS call is a key-usage event (``connections.key_usage``), with the encryption context.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone
from django.utils.formats import date_format

from audit.services import record_event
from connections import aws, notifications
from connections.key_usage import record_key_usage
from connections.lifecycle import transition
from connections.models import (
    ByokConnection,
    ConnectionState,
    DataKey,
    DataKeyWrapping,
    RegionalKey,
)
from core.locations import get_location
from core.tasks import enqueue
from dataplane.envelope import DataKeyCipher, DecryptionFailed
from dataplane.models import AppRecord
from orgs import notices
from orgs.models import AppInstance
from reencryption.models import (
    ReencryptionEvent,
    ReencryptionJob,
    ReencryptionMode,
    ReencryptionRequest,
)

log = logging.getLogger(__name__)
S = ConnectionState
J = ReencryptionJob.State
P = ReencryptionJob.Phase
JOB_IDENTITY = {"type": "AWSService", "invokedBy": "byok-portal-reencryption"}

DEFAULT_REWRAP_BATCH = 100  # data keys
DEFAULT_ROTATE_BATCH = 500  # records
DEFAULT_LEASE_S = 120.0
DEFAULT_KMS_CONCURRENCY = 8
DEFAULT_KEY_CHECK_INTERVAL_S = 5.0
DEFAULT_TRANSIENT_RETRIES = 3
DEFAULT_TRANSIENT_BACKOFF_S = 1.0
#: Retire attempts per run that may find stragglers before the run gives up (sweeper retries).
MAX_RETIRE_ATTEMPTS = 5


def _setting(name: str, default):
    return getattr(settings, name, default)


def default_batch_size(mode: str) -> int:
    if mode == ReencryptionMode.ROTATE:
        return int(_setting("REENCRYPTION_ROTATE_BATCH", DEFAULT_ROTATE_BATCH))
    return int(_setting("REENCRYPTION_REWRAP_BATCH", DEFAULT_REWRAP_BATCH))


def default_batch_interval_s() -> float:
    return float(_setting("REENCRYPTION_BATCH_INTERVAL_S", 0.0))


class _Stop(Exception):
    """End this run: the job is paused, waiting, finished, failed or its lease was lost."""


class _JobFailed(Exception):
    """The job cannot succeed (corrupt data, misconfiguration); the message is for people."""


# --- Lease -----------------------------------------------------------------------------------


def _holder() -> tuple[str, int]:
    return socket.gethostname()[:255], os.getpid()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process nobody reaped yet is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return True


def lease_is_live(job: ReencryptionJob, now=None) -> bool:
    """Does another run hold the job now? A dead holder on this host frees it at once."""
    if not job.lease_token:
        return False
    now = now or timezone.now()
    lease_s = float(_setting("REENCRYPTION_LEASE_S", DEFAULT_LEASE_S))
    if job.heartbeat_at is None or now - job.heartbeat_at > timedelta(seconds=lease_s):
        return False
    host, pid = _holder()
    if job.lease_host == host and job.lease_pid and job.lease_pid != pid:
        return _pid_alive(job.lease_pid)
    return True


@transaction.atomic
def _acquire(job_id: int) -> str | None:
    job = ReencryptionJob.objects.select_for_update(of=("self",)).filter(pk=job_id).first()
    if job is None or job.state in ReencryptionJob.FINISHED_STATES:
        return None
    now = timezone.now()
    if job.state == J.SCHEDULED and job.scheduled_for > now:
        return None  # an early delivery (or eager Celery): the eta message or the sweeper runs it
    if job.state == J.PAUSED:
        state = ByokConnection.objects.values_list("state", flat=True).get(pk=job.connection_id)
        if state != S.REENCRYPTING:
            return None  # resumes after restore
    if lease_is_live(job, now):
        return None
    host, pid = _holder()
    job.lease_token, job.lease_host, job.lease_pid = uuid.uuid4().hex, host, pid
    job.heartbeat_at = now
    job.save(update_fields=["lease_token", "lease_host", "lease_pid", "heartbeat_at"])
    return job.lease_token


def _release(job_id: int, token: str) -> None:
    # An empty token means "no lease", not a credential.
    ReencryptionJob.objects.filter(pk=job_id, lease_token=token).update(
        lease_token="",
        lease_host="",
        lease_pid=None,  # nosec B106
    )


# --- Entry points ----------------------------------------------------------------------------


def run_job(*, job_id: int, max_steps: int | None = None) -> str:
    """Run (or resume) a job until it is done, paused or cannot go on now; returns its state.

    Idempotent and safe to call concurrently: only the run holding the lease works.
    ``max_steps`` stops after that many steps (a step is the switch, one batch, or the
    retire step): tests and the browser lane advance a job one batch at a time with it.
    """
    token = _acquire(job_id)
    if token is not None:
        try:
            runner = _Runner(job_id, token)
            try:
                runner.run(max_steps)
            finally:
                runner.close()
        except Exception as exc:
            # Unexpected (a database outage, a bug): the job stays where its checkpoint is and
            # the sweeper tries again; the rep sees why on the job's page meanwhile.
            log.exception("Re-encryption job %s stopped", job_id)
            ReencryptionJob.objects.filter(pk=job_id).update(
                last_error=f"Stopped by an error on our side ({type(exc).__name__}); retrying."
            )
            raise
        finally:
            _release(job_id, token)
    return ReencryptionJob.objects.filter(pk=job_id).values_list("state", flat=True).first() or ""


def enqueue_job(job_id: int, *, eta=None) -> None:
    """Hand the job to Celery (at ``eta`` if it is in the future). Call on commit."""
    if eta is not None and eta <= timezone.now():
        eta = None
    enqueue("reencryption.tasks.run_reencryption_job_task", job_id, eta=eta)


def sweep_jobs(*, now=None) -> list[int]:
    """Beat: enqueue every job that should be running and has no live run; fail jobs whose
    connection expired. A lost or dropped message therefore delays a job by one sweep."""
    now = now or timezone.now()
    due: list[int] = []
    jobs = ReencryptionJob.objects.filter(state__in=ReencryptionJob.ACTIVE_STATES)
    for job in jobs.select_related("connection"):
        if job.connection.state == S.EXPIRED:
            with transaction.atomic():
                ByokConnection.objects.select_for_update().get(pk=job.connection_id)
                _fail_locked(
                    ReencryptionJob.objects.select_for_update(of=("self",)).get(pk=job.pk),
                    "Key access was not restored within the restore window; the job ended.",
                )
            continue
        if job.state == J.SCHEDULED and job.scheduled_for > now:
            continue
        if job.state == J.PAUSED and job.connection.state != S.REENCRYPTING:
            continue
        if lease_is_live(job, now):
            continue
        due.append(job.pk)
    for job_id in due:
        enqueue_job(job_id)
    return due


# --- Hooks for connections.services ---------------------------------------------------------------


def pause_jobs_for_revocation(connection: ByokConnection, *, reason: str) -> list[int]:
    """Inside the revoking transaction: running jobs pause at once (their runs stop at the
    next step); scheduled ones stay scheduled and start once the connection is active."""
    paused = []
    for job in ReencryptionJob.objects.select_for_update(of=("self",)).filter(
        connection=connection, state=J.RUNNING
    ):
        _pause_locked(job, f"Paused: key access was revoked ({reason[:200]}).")
        paused.append(job.pk)
    return paused


def return_to_reencrypting_after_restore(connection: ByokConnection) -> bool:
    """Inside the restoring transaction: a job paused by the revocation takes the connection
    back to re-encrypting (data is under two key generations until it finishes) and resumes
    from its checkpoint once the restore commits."""
    if not ReencryptionJob.objects.filter(connection=connection, state=J.PAUSED).exists():
        return False
    transition(
        connection, S.REENCRYPTING, reason="Access restored; the paused re-encryption resumes."
    )
    connection_id = connection.pk
    transaction.on_commit(lambda: resume_after_restore(connection_id))
    return True


def resume_after_restore(connection_id: int) -> list[int]:
    """After the restore committed: enqueue the paused jobs (each resumes from its checkpoint)."""
    ids = list(
        ReencryptionJob.objects.filter(connection_id=connection_id, state=J.PAUSED).values_list(
            "pk", flat=True
        )
    )
    for job_id in ids:
        enqueue_job(job_id)
    return ids


def fail_jobs_for_expiry(connection: ByokConnection) -> None:
    """Inside the expiring transaction: a connection that expired cannot be re-encrypted."""
    for job in ReencryptionJob.objects.select_for_update(of=("self",)).filter(
        connection=connection, state__in=ReencryptionJob.ACTIVE_STATES
    ):
        _fail_locked(job, "Key access was not restored within the restore window.")


# --- Shared state changes (the caller holds the job row's lock) ------------------------------


def _event(job: ReencryptionJob, kind: str, message: str, *, internal: bool = False) -> None:
    ReencryptionEvent.objects.create(
        request_id=job.request_id, kind=kind, message=message, internal=internal
    )


def _audit(job: ReencryptionJob, event_name: str, *, org=None, error: str = "", **elements):
    connection = job.connection
    record_event(
        org=org or connection.organization,
        user_identity=JOB_IDENTITY,
        event_name=event_name,
        request_parameters={
            "reencryptionRequestId": job.request_id,
            "jobId": job.pk,
            "mode": job.mode,
        },
        response_elements={"state": job.state, "phase": job.phase, **elements},
        resources=[
            {"type": "AWS::KMS::Key", "ARN": arn}
            for arn in RegionalKey.objects.filter(
                pk__in=[*job.new_keys.values(), *job.old_keys]
            ).values_list("key_arn", flat=True)
        ],
        error_code="ReencryptionFailed" if error else "",
        error_message=error[:300],
        recipient_account_id=connection.aws_account_id,
    )


def _pause_locked(job: ReencryptionJob, reason: str) -> None:
    if job.state != J.RUNNING:
        return
    job.state = J.PAUSED
    job.paused_at = timezone.now()
    job.state_reason = reason[:500]
    job.rate = 0.0
    job.save(update_fields=["state", "paused_at", "state_reason", "rate"])
    _event(job, "paused", f"{reason} Progress is kept: {job.done} of {job.total} {job.unit}.")
    _audit(job, "PauseReencryption", reason=reason[:300], done=job.done, total=job.total)


def _fail_locked(job: ReencryptionJob, reason: str) -> None:
    """Fail the job; nothing is retired, the connection stays usable with both key generations."""
    if job.state in ReencryptionJob.FINISHED_STATES:
        return
    now = timezone.now()
    job.state = J.FAILED
    job.finished_at = now
    job.state_reason = reason[:500]
    job.last_error = reason[:500]
    job.rate = 0.0
    job.save(update_fields=["state", "finished_at", "state_reason", "last_error", "rate"])
    ReencryptionRequest.objects.filter(pk=job.request_id).update(
        status=ReencryptionRequest.Status.FAILED, closed_at=now
    )
    connection = ByokConnection.objects.select_for_update().get(pk=job.connection_id)
    if connection.state == S.REENCRYPTING:
        transition(
            connection,
            S.ACTIVE,
            reason="Re-encryption failed; your data stays readable under your old and new keys.",
        )
    _event(job, "failed", f"The job failed: {reason}")
    _audit(job, "FailReencryption", error=reason)
    body = (
        f"Re-encryption request #{job.request_id} failed: {reason}\n"
        "Nothing was retired: your apps stay online and your data stays readable. Do NOT "
        "disable your old keys. Your account representative will contact you.\n"
    )
    transaction.on_commit(
        lambda: notifications.connection_notice(
            connection=connection, subject="re-encryption failed", body=body
        )
    )


# --- One run -------------------------------------------------------------------------------


class _Runner:
    """One run of a job by the lease holder ``token``."""

    def __init__(self, job_id: int, token: str):
        self.job_id = job_id
        self.token = token
        job = ReencryptionJob.objects.select_related("connection__organization").get(pk=job_id)
        self.connection_id = job.connection_id
        connection = job.connection
        self.org = connection.organization
        self.org_id = connection.organization_id
        self.role_arn = connection.role_arn
        self.external_id = connection.external_id
        self.regions = get_location(connection.location).regions
        self.app_ids = list(
            AppInstance.objects.filter(site__organization_id=self.org_id).values_list(
                "pk", flat=True
            )
        )
        self.calls: list[aws.KmsCall] = []
        self._session: aws.CustomerSession | None = None
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._audit = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="reencrypt-audit")
            if _background_audit_is_safe()
            else None
        )
        self._audit_pending = None
        self._keys_checked_at = float("-inf")
        self._fresh: dict[int, bool] = {}
        self._ciphers: dict[int, DataKeyCipher] = {}
        self._pending: dict[int, list[Future]] = {}
        self._retire_attempts = 0
        self._last_commit = time.monotonic()

    # -- plumbing --

    def close(self) -> None:
        try:
            self._flush_calls()
        finally:
            self._drain_audit()
        self._abandon_unwraps()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._ciphers.clear()

    def _job(self) -> ReencryptionJob:
        return ReencryptionJob.objects.select_related("connection").get(pk=self.job_id)

    def _lock_job(self) -> ReencryptionJob | None:
        """The job row, locked, if this run still holds the lease.

        Lock order everywhere: connection, then job, then the audit chain head.
        """
        job = (
            ReencryptionJob.objects.select_for_update(of=("self",))
            .select_related("connection")
            .get(pk=self.job_id)
        )
        return job if job.lease_token == self.token else None

    def _lock_connection(self) -> ByokConnection:
        return (
            ByokConnection.objects.select_for_update()
            .select_related("organization")
            .get(pk=self.connection_id)
        )

    def _on_call(self, call: aws.KmsCall) -> None:
        extra = getattr(self._local, "extra", None)
        if extra is not None and call.operation == extra[0]:
            call = replace(call, encryption_context=extra[1], request_parameters=extra[2])
        self.calls.append(call)

    def session(self) -> aws.CustomerSession:
        if self._session is None or self._session.expires_at <= time.monotonic() + 60:
            self._session = aws.assume_customer_role(
                role_arn=self.role_arn,
                external_id=self.external_id,
                on_call=self._on_call,
                cached=False,
            )
        return self._session

    def _flush_calls(self) -> None:
        """Write the AWS calls made so far as key-usage events.

        Inline, or on the run's audit writer (a thread with its own database connection) so
        that one batch's events are written while the next batch's KMS calls are in flight. At
        most one batch is in flight: a new one waits for the previous (and any error in it).
        """
        calls, self.calls = self.calls, []
        if not calls:
            return
        if self._audit is None:
            _write_calls(self.org, self.job_id, calls)
            return
        if self._audit_pending is not None:
            self._audit_pending.result()
        self._audit_pending = self._audit.submit(_write_calls, self.org, self.job_id, calls)

    def _drain_audit(self) -> None:
        if self._audit is None:
            return
        try:
            if self._audit_pending is not None:
                self._audit_pending.result()
        finally:
            self._audit_pending = None
            self._audit.submit(lambda: connection.close()).result()  # the thread's own
            self._audit.shutdown(wait=True)
            self._audit = None

    def _executor(self) -> ThreadPoolExecutor | None:
        """The run's KMS threads (None: calls are made one by one, in this thread)."""
        concurrency = int(_setting("REENCRYPTION_KMS_CONCURRENCY", DEFAULT_KMS_CONCURRENCY))
        if concurrency <= 1:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reencrypt")
        return self._pool

    def _parallel(self, fn, items: list) -> list:
        pool = self._executor() if len(items) > 1 else None
        if pool is None:
            return [fn(item) for item in items]
        return list(pool.map(fn, items))

    def _org_deks(self):
        return DataKey.objects.filter(app_instance_id__in=self.app_ids, destroyed_at=None)

    def _org_records(self):
        return AppRecord.objects.filter(app_instance_id__in=self.app_ids)

    # -- the loop --

    def run(self, max_steps: int | None) -> None:
        steps = 0
        while True:
            job = self._job()
            try:
                more = self._step(job)
            except _Stop:
                return
            except _JobFailed as exc:
                self._flush_calls()
                with transaction.atomic():
                    self._lock_connection()
                    locked = self._lock_job()
                    if locked is not None:
                        _fail_locked(locked, str(exc))
                return
            steps += 1
            if not more or (max_steps is not None and steps >= max_steps):
                return
            interval = ReencryptionJob.objects.values_list("batch_interval_s", flat=True).get(
                pk=self.job_id
            )
            if interval > 0:
                time.sleep(interval)

    def _step(self, job: ReencryptionJob) -> bool:
        if job.state == J.SCHEDULED:
            return self._start()
        if job.state == J.PAUSED:
            return self._resume()
        if job.state != J.RUNNING:
            return False
        self._check_connection()
        handler = {
            P.REWRAP: self._rewrap_batch,
            P.ROTATE: self._rotate_batch,
            P.VERIFY: self._verify_batch,
            P.RETIRE: self._retire,
        }.get(job.phase)
        if handler is None:
            raise _JobFailed(f"The job is running in an unknown phase ({job.phase}).")
        return self._guarded(handler, job)

    def _guarded(self, handler, job: ReencryptionJob) -> bool:
        """Run one step; AWS refusals revoke (and so pause), transient failures retry."""
        from dataplane.records import AppSuspended

        retries = int(_setting("REENCRYPTION_TRANSIENT_RETRIES", DEFAULT_TRANSIENT_RETRIES))
        backoff = float(_setting("REENCRYPTION_TRANSIENT_BACKOFF_S", DEFAULT_TRANSIENT_BACKOFF_S))
        attempt = 0
        while True:
            try:
                return handler(job)
            except aws.REVOKING_CAUSES as err:
                self._flush_calls()
                self._refused(err)
                raise _Stop from err
            except (aws.AwsError, AppSuspended) as err:
                self._flush_calls()
                transient = err.transient
                if isinstance(err, AppSuspended) and not transient:
                    # The data plane refused (it revoked, or the app is suspended): pause.
                    self._check_connection()
                    raise _JobFailed(f"The data plane refused: {err.reason}") from err
                if not transient:
                    raise _JobFailed(f"AWS refused a call of the job: {err}") from err
                attempt += 1
                self._note_error(f"AWS did not answer ({getattr(err, 'cause', 'transient')}).")
                if attempt > retries:
                    log.warning("Re-encryption job %s waits: %s", self.job_id, err)
                    raise _Stop from err  # the sweeper resumes it from the checkpoint
                time.sleep(backoff * 2 ** (attempt - 1))
                job = self._job()
            except DecryptionFailed as err:
                self._flush_calls()
                raise _JobFailed(f"A record or data key did not decrypt: {err}") from err

    def _note_error(self, message: str) -> None:
        ReencryptionJob.objects.filter(pk=self.job_id).update(
            last_error=message[:500], heartbeat_at=timezone.now()
        )

    def _refused(self, err: aws.AwsError) -> None:
        from connections.services import revoke_after_aws_refusal

        revoke_after_aws_refusal(
            connection_id=self.connection_id,
            region=err.region or self.regions[0],
            cause=err.cause,
            detail=f"{err.code or err.cause}: {err.message}"[:300],
            key_arn=getattr(err, "key_arn", ""),
        )

    def _check_connection(self) -> None:
        """Stop (pausing or failing the job) unless the connection is re-encrypting."""
        state = ByokConnection.objects.values_list("state", "state_reason").get(
            pk=self.connection_id
        )
        if state[0] == S.REENCRYPTING:
            return
        with transaction.atomic():
            self._lock_connection()
            job = self._lock_job()
            if job is None or job.state != J.RUNNING:
                pass
            elif state[0] in (S.REVOKED, S.RESTORING):
                _pause_locked(job, f"Paused: key access is {state[0]} ({state[1][:200]}).")
            else:
                _fail_locked(
                    job,
                    f"The key connection became {state[0]} while the job ran; nothing was retired.",
                )
        raise _Stop

    def _check_keys(self) -> None:
        """``DescribeKey`` every key in use at most every few seconds: moto (unlike AWS) lets
        a disabled key work, and a customer who disables a key means to revoke."""
        interval = float(
            _setting("REENCRYPTION_KEY_CHECK_INTERVAL_S", DEFAULT_KEY_CHECK_INTERVAL_S)
        )
        now = time.monotonic()
        if now - self._keys_checked_at < interval:
            return
        keys = RegionalKey.objects.filter(connection_id=self.connection_id, retired_at=None)
        session = self.session()
        for key in keys:
            described = session.describe_key(key.region, key.key_arn)
            if described.state != "Enabled":
                err_cls = aws.KeyDisabled if described.state == "Disabled" else aws.KeyInvalidState
                err = err_cls(
                    f"The key {key.key_arn} is {described.state}.",
                    region=key.region,
                    code=f"KeyState:{described.state}",
                    operation="DescribeKey",
                )
                err.key_arn = key.key_arn
                raise err
        self._keys_checked_at = now

    # -- commit of one batch --

    def _commit(
        self,
        *,
        field: str,
        expected: int,
        new_last: int,
        units: int,
        counter: str,
        started: float,
        wrappings=(),
        updates=(),
    ) -> None:
        """Apply a batch and move the checkpoint, only if the checkpoint is still ``expected``
        (a duplicate run's batch is discarded, its results already being in)."""
        with transaction.atomic():
            job = self._lock_job()
            if job is None or job.state != J.RUNNING or getattr(job, field) != expected:
                lost = True
            else:
                lost = False
                if wrappings:
                    DataKeyWrapping.objects.bulk_create(wrappings, ignore_conflicts=True)
                _apply_updates(updates)
                now_mono = time.monotonic()
                elapsed = max(now_mono - min(started, self._last_commit), 1e-6)
                self._last_commit = now_mono
                batch_rate = units / elapsed
                job.rate = batch_rate if job.rate <= 0 else 0.7 * job.rate + 0.3 * batch_rate
                setattr(job, field, new_last)
                setattr(job, counter, getattr(job, counter) + units)
                job.batches += 1
                job.heartbeat_at = timezone.now()
                job.last_error = ""
                job.save(
                    update_fields=[
                        field,
                        counter,
                        "rate",
                        "batches",
                        "heartbeat_at",
                        "last_error",
                    ]
                )
        if lost:
            raise _Stop

    # -- 1. switch --

    def _start(self) -> bool:
        with transaction.atomic():
            connection = self._lock_connection()
            job = self._lock_job()
            if job is None or job.state != J.SCHEDULED:
                return job is not None
            if connection.state in (S.DEGRADED, S.REVOKED, S.RESTORING):
                label = connection.get_state_display().lower()
                job.state_reason = (
                    f"Waiting: your key connection is {label}; the job starts once it is active."
                )
                job.heartbeat_at = timezone.now()
                job.save(update_fields=["state_reason", "heartbeat_at"])
                outcome = "wait"
            elif connection.state != S.ACTIVE:
                _fail_locked(
                    job,
                    f"The key connection is {connection.get_state_display().lower()}; "
                    "re-encryption needs an active connection.",
                )
                outcome = "failed"
            else:
                self._switch_locked(connection, job)
                outcome = "started"
        if outcome != "started":
            raise _Stop
        return True

    def _switch_locked(self, connection: ByokConnection, job: ReencryptionJob) -> None:
        request = ReencryptionRequest.objects.get(pk=job.request_id)
        now = timezone.now()
        current = {
            k.region: k
            for k in RegionalKey.objects.select_for_update().filter(
                connection=connection, is_current=True
            )
        }
        missing = [r for r in self.regions if r not in current or not request.key_arns.get(r)]
        if missing:
            raise _JobFailed(f"No current or new key for {', '.join(missing)}.")
        same = [r for r in self.regions if current[r].key_arn == request.key_arns[r]]
        if same:
            raise _JobFailed(f"The new key in {', '.join(same)} is the current key.")
        old_ids = list(
            RegionalKey.objects.filter(connection=connection, retired_at=None).values_list(
                "pk", flat=True
            )
        )
        transition(
            connection,
            S.REENCRYPTING,
            reason=f"Re-encrypting under new keys (request #{request.pk}).",
        )
        new_keys: dict[str, int] = {}
        for region in self.regions:
            generation = RegionalKey.objects.filter(connection=connection, region=region).aggregate(
                g=Max("generation")
            )["g"]
            RegionalKey.objects.filter(pk=current[region].pk).update(is_current=False)
            new = RegionalKey.objects.create(
                connection=connection,
                region=region,
                key_arn=request.key_arns[region],
                alias=request.key_alias,
                generation=(generation or 0) + 1,
                is_current=True,
                status=RegionalKey.Status.ENABLED,
                last_checked_at=now,
            )
            new_keys[region] = new.pk
        deks = DataKey.objects.filter(app_instance_id__in=self.app_ids)
        deks.filter(is_current=True).update(is_current=False)
        records = AppRecord.objects.filter(app_instance_id__in=self.app_ids)
        job.dek_watermark = deks.aggregate(m=Max("pk"))["m"] or 0
        job.record_watermark = records.aggregate(m=Max("pk"))["m"] or 0
        job.record_count = records.count()
        rewrap = job.mode == ReencryptionMode.REWRAP
        job.total = (
            deks.filter(destroyed_at=None, pk__lte=job.dek_watermark).count()
            if rewrap
            else job.record_count
        )
        job.state, job.phase = J.RUNNING, (P.REWRAP if rewrap else P.ROTATE)
        job.started_at = job.heartbeat_at = now
        job.done = job.last_id = 0
        job.new_keys, job.old_keys = new_keys, old_ids
        job.state_reason = ""
        job.save()
        what = (
            f"{job.total} data keys are being re-wrapped under them"
            if rewrap
            else f"{job.total} records are being re-encrypted under new data keys"
        )
        _event(
            job,
            "started",
            f"The job started: new writes use new data keys under your new keys; {what}.",
        )
        _audit(
            job,
            "StartReencryption",
            org=connection.organization,
            total=job.total,
            records=job.record_count,
            newKeys={r: request.key_arns[r] for r in self.regions},
            previousKeys={r: current[r].key_arn for r in self.regions},
        )
        app_ids = list(self.app_ids)

        def forget_writing_keys():
            from dataplane import dek_cache

            for app_id in app_ids:
                dek_cache.CACHE.forget_current(app_id)

        transaction.on_commit(forget_writing_keys)

    def _resume(self) -> bool:
        with transaction.atomic():
            job = self._lock_job()
            if job is None or job.state != J.PAUSED:
                return job is not None
            state = ByokConnection.objects.values_list("state", flat=True).get(
                pk=self.connection_id
            )
            if state != S.REENCRYPTING:
                resumed = False
            else:
                resumed = True
                paused_for = timezone.now() - (job.paused_at or timezone.now())
                job.state, job.paused_at, job.state_reason = J.RUNNING, None, ""
                job.heartbeat_at = timezone.now()
                job.save(update_fields=["state", "paused_at", "state_reason", "heartbeat_at"])
                _event(
                    job,
                    "resumed",
                    f"Key access is back: the job resumed at {job.done} of {job.total} "
                    f"{job.unit} (paused for {int(paused_for.total_seconds())} s).",
                )
                _audit(job, "ResumeReencryption", done=job.done, total=job.total)
        if not resumed:
            raise _Stop
        return True

    # -- 2. re-wrap --

    def _new_keys(self, job: ReencryptionJob) -> dict[str, RegionalKey]:
        keys = RegionalKey.objects.in_bulk(list(job.new_keys.values()))
        return {region: keys[pk] for region, pk in job.new_keys.items()}

    def _rewrap_batch(self, job: ReencryptionJob) -> bool:
        started = time.monotonic()
        self._check_keys()
        rows = list(
            self._org_deks()
            .filter(pk__gt=job.last_id, pk__lte=job.dek_watermark)
            .order_by("pk")
            .values_list("pk", "encryption_context")[: job.batch_size]
        )
        if not rows:
            self._enter_verify(job, note=f"{job.done} data keys re-wrapped under the new keys.")
            return True
        wrappings = self._rewrap(rows, job)
        self._flush_calls()
        self._commit(
            field="last_id",
            expected=job.last_id,
            new_last=rows[-1][0],
            units=len(rows),
            counter="done",
            started=started,
            wrappings=wrappings,
        )
        return True

    def _rewrap(self, rows: list[tuple[int, dict]], job: ReencryptionJob) -> list[DataKeyWrapping]:
        """New wrappings of these DEKs under every new key that lacks one (not saved)."""
        new_keys = self._new_keys(job)
        new_ids = {k.pk for k in new_keys.values()}
        by_dek: dict[int, list[DataKeyWrapping]] = defaultdict(list)
        for wrapping in DataKeyWrapping.objects.filter(
            data_key_id__in=[pk for pk, _ in rows], retired_at=None
        ).select_related("regional_key"):
            by_dek[wrapping.data_key_id].append(wrapping)
        plan = []
        for dek_id, context in rows:
            wrappings = by_dek[dek_id]
            have = {w.regional_key_id for w in wrappings}
            for region in self.regions:
                new = new_keys[region]
                if new.pk in have:
                    continue
                # Same region first (ReEncrypt); an old key before a new one; newest first.
                candidates = sorted(
                    wrappings,
                    key=lambda w: (
                        w.region != region,
                        w.regional_key_id in new_ids,
                        -w.regional_key.generation,
                    ),
                )
                if not candidates:
                    raise _JobFailed(f"Data key #{dek_id} has no wrapped copy to re-wrap.")
                plan.append((dek_id, context, region, new, candidates[0]))
        if plan:
            self.session()  # assumed once, before the threads share it
        return self._parallel(self._rewrap_one, plan)

    def _rewrap_one(self, item) -> DataKeyWrapping:
        dek_id, context, region, new, source = item
        session = self.session()
        source_arn = source.regional_key.key_arn
        try:
            if source.region == region:
                self._local.extra = (
                    "ReEncrypt",
                    context,
                    {
                        "SourceKeyId": source_arn,
                        "DestinationKeyId": new.key_arn,
                        "SourceEncryptionContext": context,
                        "DestinationEncryptionContext": context,
                    },
                )
                blob = session.re_encrypt(
                    region,
                    blob=bytes(source.blob),
                    source_key=source_arn,
                    dest_key=new.key_arn,
                    context=context,
                )
            else:
                plaintext = session.decrypt(source.region, source_arn, bytes(source.blob), context)
                try:
                    blob = session.encrypt(region, new.key_arn, plaintext, context)
                finally:
                    del plaintext
        except aws.AwsError as err:
            err.key_arn = source_arn if err.region == source.region else new.key_arn
            raise
        finally:
            self._local.extra = None
        return DataKeyWrapping(data_key_id=dek_id, regional_key_id=new.pk, region=region, blob=blob)

    # -- 2'. rotate --

    def _is_fresh(self, dek_id: int, job: ReencryptionJob) -> bool:
        """Rotate mode: a DEK made after the switch, wrapped under every new key."""
        fresh = self._fresh.get(dek_id)
        if fresh is None:
            fresh = dek_id > job.dek_watermark and DataKeyWrapping.objects.filter(
                data_key_id=dek_id,
                regional_key_id__in=list(job.new_keys.values()),
                retired_at=None,
            ).count() == len(self.regions)
            self._fresh[dek_id] = fresh
        return fresh

    def _rotate_records(self, rows, job: ReencryptionJob) -> list[tuple]:
        """Re-encrypt records not under a fresh DEK: ``(pk, version, old dek, new dek, blob)``."""
        from dataplane import dek_cache
        from dataplane import records as dataplane

        updates = []
        for pk, app_id, dek_id, version, blob in rows:
            if self._is_fresh(dek_id, job):
                continue
            plaintext = dataplane.decrypt_for(
                app_instance_id=app_id, record_id=pk, blob=bytes(blob)
            )
            try:
                for _attempt in range(2):
                    new_dek, new_blob = dataplane.encrypt_for(
                        app_instance_id=app_id, record_id=pk, plaintext=plaintext
                    )
                    if self._is_fresh(new_dek, job):
                        break
                    # A DEK created under the old keys in a race with the switch: unseat it.
                    DataKey.objects.filter(pk=new_dek, is_current=True).update(is_current=False)
                    dek_cache.CACHE.forget_current(app_id)
                else:
                    raise _JobFailed(f"App #{app_id} got no data key under the new keys.")
            finally:
                del plaintext
            updates.append((pk, version, dek_id, new_dek, new_blob))
        return updates

    def _rotate_batch(self, job: ReencryptionJob) -> bool:
        started = time.monotonic()
        self._check_keys()
        rows = list(
            self._org_records()
            .filter(pk__gt=job.last_id, pk__lte=job.record_watermark)
            .order_by("pk")
            .values_list("pk", "app_instance_id", "data_key_id", "version", "ciphertext")[
                : job.batch_size
            ]
        )
        if not rows:
            self._enter_verify(job, note=f"{job.done} records re-encrypted under new data keys.")
            return True
        updates = self._rotate_records(rows, job)
        self._flush_calls()
        self._commit(
            field="last_id",
            expected=job.last_id,
            new_last=rows[-1][0],
            units=len(rows),
            counter="done",
            started=started,
            updates=updates,
        )
        return True

    # -- 3. verify --

    def _enter_verify(self, job: ReencryptionJob, *, note: str) -> None:
        with transaction.atomic():
            locked = self._lock_job()
            if locked is None or locked.state != J.RUNNING:
                raise _Stop
            if locked.phase not in (P.REWRAP, P.ROTATE):
                return
            locked.phase = P.VERIFY
            locked.verify_last_id = locked.verified = 0
            locked.verify_total = self._org_records().count()
            locked.rate = 0.0
            locked.save(
                update_fields=["phase", "verify_last_id", "verified", "verify_total", "rate"]
            )
            _event(locked, "verifying", f"{note} Verifying that every record decrypts.")
            _audit(
                locked,
                "RewrapDataKeys" if job.mode == ReencryptionMode.REWRAP else "RotateDataKeys",
                done=locked.done,
                total=locked.total,
                kmsCalls=locked.kms_calls,
            )
        self._last_commit = time.monotonic()

    def _unwrap_new(self, plan: list[tuple[int, dict, dict[str, bytes]]], job) -> None:
        """Start ``Decrypt`` of each DEK's new wrapping in every region (in the KMS threads);
        :meth:`_cipher` collects them, so records of one DEK are opened while the next DEKs
        are still being unwrapped."""
        new_keys = self._new_keys(job)
        session = self.session()

        def unwrap(item):
            context, region, key_arn, blob = item
            try:
                return session.decrypt(region, key_arn, blob, context)
            except aws.AwsError as err:
                err.key_arn = key_arn
                raise

        pool = self._executor()
        for dek_id, context, blobs in plan:
            items = [(context, r, new_keys[r].key_arn, blobs[r]) for r in self.regions]
            if pool is None:
                self._pending[dek_id] = [_done(unwrap(item)) for item in items]
            else:
                self._pending[dek_id] = [pool.submit(unwrap, item) for item in items]

    def _cipher(self, dek_id: int) -> DataKeyCipher | None:
        """The DEK as unwrapped from its new wrappings (which must agree across regions)."""
        cipher = self._ciphers.get(dek_id)
        if cipher is not None:
            return cipher
        futures = self._pending.pop(dek_id, None)
        if futures is None:
            return None
        try:
            plaintexts = [future.result() for future in futures]
        except BaseException:
            self._abandon_unwraps()
            raise
        first = plaintexts[0]
        if not all(hmac.compare_digest(first, other) for other in plaintexts[1:]):
            raise _JobFailed(f"Data key #{dek_id} unwraps to different keys in two regions.")
        cipher = self._ciphers[dek_id] = DataKeyCipher(dek_id=dek_id, dek=first)
        del plaintexts, first
        return cipher

    def _abandon_unwraps(self) -> None:
        for futures in self._pending.values():
            for future in futures:
                future.cancel()
        self._pending.clear()

    def _verify_batch(self, job: ReencryptionJob) -> bool:
        started = time.monotonic()
        self._check_keys()
        if job.mode == ReencryptionMode.REWRAP:
            return self._verify_rewrap(job, started)
        return self._verify_rotate(job, started)

    def _verify_rewrap(self, job: ReencryptionJob, started: float) -> bool:
        rows = list(
            self._org_deks()
            .filter(pk__gt=job.verify_last_id)
            .order_by("pk")
            .values_list("pk", "encryption_context")[: job.batch_size]
        )
        if not rows:
            return self._enter_retire(job)
        stragglers = self._rewrap(rows, job)  # DEKs made during the job under the old keys
        blobs: dict[int, dict[str, bytes]] = defaultdict(dict)
        for wrapping in DataKeyWrapping.objects.filter(
            data_key_id__in=[pk for pk, _ in rows],
            regional_key_id__in=list(job.new_keys.values()),
            retired_at=None,
        ):
            blobs[wrapping.data_key_id][wrapping.region] = bytes(wrapping.blob)
        for wrapping in stragglers:
            blobs[wrapping.data_key_id][wrapping.region] = wrapping.blob
        incomplete = [pk for pk, _ in rows if len(blobs[pk]) != len(self.regions)]
        if incomplete:
            raise _JobFailed(f"Data key #{incomplete[0]} is not wrapped under every new key.")
        self._ciphers.clear()
        self._unwrap_new([(pk, context, blobs[pk]) for pk, context in rows], job)
        try:
            opened = self._open_records(
                self._org_records()
                .filter(data_key_id__in=[pk for pk, _ in rows])
                .order_by("data_key_id")  # the DEKs in the order their unwraps were started
                .values_list("pk", "app_instance_id", "data_key_id", "ciphertext")
                .iterator(chunk_size=5000)
            )
            for pk, _context in rows:  # DEKs without records are verified too
                self._cipher(pk)
        finally:
            self._abandon_unwraps()
            self._ciphers.clear()
        self._flush_calls()
        self._commit(
            field="verify_last_id",
            expected=job.verify_last_id,
            new_last=rows[-1][0],
            units=opened,
            counter="verified",
            started=started,
            wrappings=stragglers,
        )
        return True

    def _open_records(self, rows) -> int:
        """AES-GCM-open every record with the DEK unwrapped from its new wrapping."""
        org_id, ciphers, cipher_of = self.org_id, self._ciphers, self._cipher
        failed: list[int] = []
        opened = 0
        for pk, app_id, dek_id, blob in rows:
            cipher = ciphers.get(dek_id) or cipher_of(dek_id)
            try:
                if cipher is None:
                    raise DecryptionFailed("its data key was not verified")
                cipher.open(bytes(blob), (org_id, app_id, pk))
            except DecryptionFailed:
                failed.append(pk)
            opened += 1
        if failed:
            shown = ", ".join(f"#{pk}" for pk in failed[:10])
            raise _JobFailed(
                f"{len(failed)} record(s) did not decrypt under the new keys ({shown}); "
                "nothing was retired."
            )
        return opened

    def _verify_rotate(self, job: ReencryptionJob, started: float) -> bool:
        query = (
            self._org_records()
            .filter(pk__gt=job.verify_last_id)
            .order_by("pk")
            .values_list("pk", "app_instance_id", "data_key_id", "version", "ciphertext")
        )
        rows = list(query[: job.batch_size])
        if not rows:
            return self._enter_retire(job)
        stale = [row for row in rows if not self._is_fresh(row[2], job)]
        if stale:  # written during the job under a DEK that is not fresh: rotate them now
            with transaction.atomic():
                _apply_updates(self._rotate_records(stale, job))
            rows = list(query.filter(pk__lte=rows[-1][0]))
        unverified = sorted({row[2] for row in rows} - set(self._ciphers) - set(self._pending))
        if unverified:
            contexts = dict(
                DataKey.objects.filter(pk__in=unverified).values_list("pk", "encryption_context")
            )
            blobs: dict[int, dict[str, bytes]] = defaultdict(dict)
            for wrapping in DataKeyWrapping.objects.filter(
                data_key_id__in=unverified,
                regional_key_id__in=list(job.new_keys.values()),
                retired_at=None,
            ):
                blobs[wrapping.data_key_id][wrapping.region] = bytes(wrapping.blob)
            missing = [pk for pk in unverified if len(blobs[pk]) != len(self.regions)]
            if missing:
                raise _JobFailed(f"Data key #{missing[0]} is not wrapped under every new key.")
            self._unwrap_new([(pk, contexts[pk], blobs[pk]) for pk in unverified], job)
        opened = self._open_records((pk, app, dek, blob) for pk, app, dek, _v, blob in rows)
        self._flush_calls()
        self._commit(
            field="verify_last_id",
            expected=job.verify_last_id,
            new_last=rows[-1][0],
            units=opened,
            counter="verified",
            started=started,
        )
        return True

    def _enter_retire(self, job: ReencryptionJob) -> bool:
        with transaction.atomic():
            locked = self._lock_job()
            if locked is None or locked.state != J.RUNNING:
                raise _Stop
            if locked.phase == P.VERIFY:
                locked.phase = P.RETIRE
                locked.save(update_fields=["phase"])
                _event(
                    locked,
                    "verified",
                    f"Verified: all {locked.verified} records decrypt under the new keys.",
                )
                _audit(
                    locked,
                    "VerifyReencryption",
                    recordsVerified=locked.verified,
                    kmsCalls=locked.kms_calls,
                )
        return True

    # -- 4. retire --

    def _retire(self, job: ReencryptionJob) -> bool:
        self._retire_attempts += 1
        if self._retire_attempts > MAX_RETIRE_ATTEMPTS:
            self._note_error("New data keys keep appearing under the old keys; retrying later.")
            raise _Stop
        new_ids = list(job.new_keys.values())
        n_regions = len(self.regions)
        with transaction.atomic():
            connection = self._lock_connection()
            locked = self._lock_job()
            if locked is None or locked.state != J.RUNNING or locked.phase != P.RETIRE:
                raise _Stop
            if connection.state != S.REENCRYPTING:
                outcome = "check"
            else:
                under_new = Count(
                    "wrappings",
                    filter=Q(wrappings__regional_key_id__in=new_ids, wrappings__retired_at=None),
                )
                deks = self._org_deks().annotate(under_new=under_new)
                if locked.mode == ReencryptionMode.REWRAP:
                    straggler = (
                        deks.filter(under_new__lt=n_regions)
                        .order_by("pk")
                        .values_list("pk", flat=True)
                        .first()
                    )
                    if straggler is not None:
                        locked.phase, locked.verify_last_id = P.VERIFY, straggler - 1
                else:
                    fresh = deks.filter(pk__gt=locked.dek_watermark, under_new=n_regions)
                    fresh_ids = list(fresh.values_list("pk", flat=True))
                    stale_current = (
                        self._org_deks().filter(is_current=True).exclude(pk__in=fresh_ids)
                    )
                    stale_current.update(is_current=False)
                    straggler = (
                        self._org_records()
                        .exclude(data_key_id__in=fresh_ids)
                        .order_by("pk")
                        .values_list("pk", flat=True)
                        .first()
                    )
                    if straggler is not None:
                        locked.phase, locked.verify_last_id = P.VERIFY, straggler - 1
                if straggler is not None:
                    locked.save(update_fields=["phase", "verify_last_id"])
                    outcome = "again"
                else:
                    self._retire_locked(connection, locked, new_ids)
                    outcome = "done"
        if outcome == "check":
            self._check_connection()
        return outcome == "again"

    def _retire_locked(self, connection, job: ReencryptionJob, new_ids: list[int]) -> None:
        now = timezone.now()
        old_keys = list(
            RegionalKey.objects.filter(connection=connection, retired_at=None).exclude(
                pk__in=new_ids
            )
        )
        old_ids = [k.pk for k in old_keys]
        retired = DataKeyWrapping.objects.filter(
            regional_key_id__in=old_ids, retired_at=None
        ).update(retired_at=now)
        destroyed = 0
        if job.mode == ReencryptionMode.ROTATE:
            # No record uses them any more (checked under this lock): erase them, by design.
            under_new = Count(
                "wrappings",
                filter=Q(wrappings__regional_key_id__in=new_ids, wrappings__retired_at=None),
            )
            fresh = (
                self._org_deks()
                .annotate(under_new=under_new)
                .filter(pk__gt=job.dek_watermark, under_new=len(self.regions))
                .values("pk")
            )
            old_deks = list(
                self._org_deks()
                .exclude(pk__in=fresh)
                .exclude(pk__in=self._org_records().values("data_key_id"))
                .values_list("pk", flat=True)
            )
            DataKeyWrapping.objects.filter(data_key_id__in=old_deks).delete()
            destroyed = DataKey.objects.filter(pk__in=old_deks).update(
                destroyed_at=now, is_current=False
            )
        RegionalKey.objects.filter(pk__in=old_ids).update(retired_at=now)
        transition(
            connection, S.ACTIVE, reason="Re-encryption completed: data is under the new keys."
        )
        job.state, job.phase = J.COMPLETED, P.DONE
        job.finished_at = job.heartbeat_at = now
        job.state_reason, job.last_error, job.rate = "", "", 0.0
        job.save()
        ReencryptionRequest.objects.filter(pk=job.request_id).update(
            status=ReencryptionRequest.Status.COMPLETED, closed_at=now
        )
        old_list = "\n".join(f"  {k.region}: {k.key_arn}" for k in old_keys)
        new_list = "\n".join(
            f"  {k.region}: {k.key_arn}"
            for k in RegionalKey.objects.filter(pk__in=new_ids).order_by("region")
        )
        took = int((now - (job.started_at or now)).total_seconds())
        _event(
            job,
            "completed",
            f"Completed in {took} s: every record decrypts under the new keys; the old keys "
            f"are retired ({retired} wrapped data keys retired"
            + (f", {destroyed} old data keys destroyed" if destroyed else "")
            + "). You may now disable the old keys in AWS KMS.",
        )
        _audit(
            job,
            "CompleteReencryption",
            org=connection.organization,
            wrappingsRetired=retired,
            dataKeysDestroyed=destroyed,
            recordsVerified=job.verified,
            retiredKeys=[k.key_arn for k in old_keys],
            kmsCalls=job.kms_calls,
        )
        when = date_format(now, "j F Y H:i")
        body = (
            f"Re-encryption request #{job.request_id} completed on {when} UTC: every record "
            f"({job.verified}) was verified to decrypt under your new keys.\n\n"
            f"New keys (in use now):\n{new_list}\n\n"
            f"Old keys (no longer used by us; you may disable them, and later schedule their "
            f"deletion, in AWS KMS):\n{old_list}\n"
        )
        org_id = self.org_id
        rep = (
            ReencryptionRequest.objects.filter(pk=job.request_id)
            .values_list("assignee__email", flat=True)
            .first()
        )

        def after_commit():
            from dataplane import dek_cache

            if job.mode == ReencryptionMode.ROTATE:
                dek_cache.purge_org(org_id)  # destroyed keys leave this process's memory now
            notifications.connection_notice(
                connection=connection,
                subject="re-encryption complete: the old keys may be disabled",
                body=body,
            )
            if rep:
                notices.send_notice(
                    subject=f"Re-encryption #{job.request_id} of {connection.organization} done",
                    body=body,
                    recipients=[rep],
                )

        transaction.on_commit(after_commit)


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _write_calls(org, job_id: int, calls: list[aws.KmsCall]) -> None:
    """The key-usage events of ``calls`` (one transaction), and the job's KMS call count."""
    from django.db.models import F

    with transaction.atomic():
        for call in calls:
            record_key_usage(org=org, call=call)
    kms = sum(1 for c in calls if c.service == "kms.amazonaws.com")
    if kms:
        ReencryptionJob.objects.filter(pk=job_id).update(kms_calls=F("kms_calls") + kms)


def _background_audit_is_safe() -> bool:
    """A second writing connection is safe on PostgreSQL, and on SQLite only when every
    transaction takes the write lock as it begins (``transaction_mode: IMMEDIATE``): a
    deferred SQLite transaction that read first fails at once ("database is locked") when it
    cannot upgrade. Never inside a caller's transaction (tests; its rows are not committed),
    and never on an in-memory database (the browser lane shares one connection)."""
    if not _setting("REENCRYPTION_AUDIT_IN_BACKGROUND", True) or connection.in_atomic_block:
        return False
    if connection.vendor != "sqlite":
        return True
    options = connection.settings_dict.get("OPTIONS") or {}
    return options.get("transaction_mode") == "IMMEDIATE" and not connection.is_in_memory_db()


def _apply_updates(updates) -> None:
    """Rotate mode: write re-encrypted records unless the app changed them meanwhile (a
    conditional UPDATE per record, sent as one ``executemany``: the ORM's per-row ``update``
    costs more than the re-encryption itself)."""
    if not updates:
        return
    table = connection.ops.quote_name(AppRecord._meta.db_table)  # the model's, not input
    with connection.cursor() as cursor:
        cursor.executemany(
            # The table name is the model's own, quoted; every value is a bound parameter.
            f"UPDATE {table} SET ciphertext = %s, data_key_id = %s "  # noqa: S608  # nosec B608
            "WHERE id = %s AND version = %s AND data_key_id = %s",
            [
                (blob, new_dek, pk, version, old_dek)
                for pk, version, old_dek, new_dek, blob in updates
            ],
        )
