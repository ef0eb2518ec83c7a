"""Entry points of the job: a run (:func:`run_job`), the beat sweeper, Celery hand-off, and the
hooks the connection's lifecycle calls (revocation pauses, restore resumes, expiry fails)."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connections import aws
from connections.lifecycle import transition
from connections.models import ByokConnection
from core.tasks import enqueue
from dataplane.envelope import DecryptionFailed
from dataplane.records import AppSuspended
from reencryption.job.common import (
    J,
    JobFailed,
    P,
    S,
    Stop,
    fail_locked,
    pause_locked,
    revoked_scopes_note,
)
from reencryption.job.lease import acquire, lease_is_live, release
from reencryption.job.retirement import RetirePhase
from reencryption.job.switch import SwitchPhase
from reencryption.job.verification import VerifyPhase
from reencryption.models import ReencryptionJob

log = logging.getLogger(__name__)


class Runner(SwitchPhase, VerifyPhase, RetirePhase):
    """One run of a job by the lease holder: the loop over its steps."""

    def run(self, max_steps: int | None) -> None:
        steps = 0
        job = self._job()
        while True:
            try:
                more = self._step(job)
            except Stop:
                return
            except JobFailed as exc:
                self.record_calls()
                with transaction.atomic():
                    self._lock_connection()
                    locked = self._lock_job()
                    if locked is not None:
                        fail_locked(locked, str(exc))
                return
            steps += 1
            if not more or (max_steps is not None and steps >= max_steps):
                return
            job = self._job()  # its pause between batches may have changed meanwhile
            if job.batch_interval_s > 0:
                time.sleep(job.batch_interval_s)
                job = self._job()

    def _step(self, job: ReencryptionJob) -> bool:
        if job.state in (J.SCHEDULED, J.PAUSED):
            note = revoked_scopes_note(self.connection_id)
            if note:  # a revoked site, app or period: wait (the sweeper tries again)
                if job.state_reason != note[:500]:
                    ReencryptionJob.objects.filter(pk=job.pk).update(state_reason=note[:500])
                return False
        if job.state == J.SCHEDULED:
            return self._start()
        if job.state == J.PAUSED:
            return self._resume()
        if job.state != J.RUNNING:
            return False
        self._check_connection(job)
        handler = {
            P.REWRAP: self._rewrap_batch,
            P.ROTATE: self._rotate_batch,
            P.VERIFY: self._verify_batch,
            P.RETIRE: self._retire,
        }.get(job.phase)
        if handler is None:
            raise JobFailed(f"The job is running in an unknown phase ({job.phase}).")
        return self._guarded(handler, job)

    def _guarded(self, handler, job: ReencryptionJob) -> bool:
        """Run one step; AWS refusals revoke (and so pause), transient failures retry.

        On every way out, the calls made so far are recorded first."""
        retries = int(settings.REENCRYPTION_TRANSIENT_RETRIES)
        backoff = float(settings.REENCRYPTION_TRANSIENT_BACKOFF_S)
        attempt = 0
        while True:
            try:
                return handler(job)
            except aws.REVOKING_CAUSES as err:
                self.record_calls()
                self._refused(err)
                raise Stop from err
            except (aws.AwsError, AppSuspended) as err:
                self.record_calls()
                transient = err.transient
                if isinstance(err, AppSuspended) and not transient:
                    # The data plane refused (it revoked, or the app is suspended): pause.
                    self._check_connection()
                    raise JobFailed(f"The data plane refused: {err.reason}") from err
                if not transient:
                    raise JobFailed(f"AWS refused a call of the job: {err}") from err
                attempt += 1
                self._note_error(f"AWS did not answer ({getattr(err, 'cause', 'transient')}).")
                if attempt > retries:
                    log.warning("Re-encryption job %s waits: %s", self.job_id, err)
                    raise Stop from err  # the sweeper resumes it from the checkpoint
                time.sleep(backoff * 2 ** (attempt - 1))
                job = self._job()
            except DecryptionFailed as err:
                self.record_calls()
                raise JobFailed(f"A record or data key did not decrypt: {err}") from err


# --- Entry points ----------------------------------------------------------------------------


def run_job(*, job_id: int, max_steps: int | None = None) -> str:
    """Run (or resume) a job until it is done, paused or cannot go on now; returns its state.

    Idempotent and safe to call concurrently: only the run holding the lease works.
    ``max_steps`` stops after that many steps (a step is the switch, one batch, or the
    retire step): tests and the browser lane advance a job one batch at a time with it.
    """
    token = acquire(job_id)
    if token is not None:
        try:
            runner = Runner(job_id, token)
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
            release(job_id, token)
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
                ByokConnection.objects.select_for_update(no_key=True).get(pk=job.connection_id)
                fail_locked(
                    ReencryptionJob.objects.select_for_update(of=("self",), no_key=True).get(
                        pk=job.pk
                    ),
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


# --- Hooks for the connection's lifecycle (reencryption.receivers) ----------------------------


def pause_jobs_for_revocation(connection: ByokConnection, *, reason: str) -> list[int]:
    """Inside the revoking transaction: running jobs pause at once (their runs stop at the
    next step); scheduled ones stay scheduled and start once the connection is active."""
    paused = []
    for job in ReencryptionJob.objects.select_for_update(of=("self",), no_key=True).filter(
        connection=connection, state=J.RUNNING
    ):
        pause_locked(job, f"Paused: key access was revoked ({reason[:200]}).")
        paused.append(job.pk)
    return paused


def pause_jobs_for_scope(connection: ByokConnection) -> list[int]:
    """Inside the transaction revoking a site, app or period: running jobs pause at once."""
    note = revoked_scopes_note(connection.pk)
    paused = []
    for job in ReencryptionJob.objects.select_for_update(of=("self",), no_key=True).filter(
        connection=connection, state=J.RUNNING
    ):
        pause_locked(job, note)
        paused.append(job.pk)
    return paused


def resume_after_scope_restore(connection: ByokConnection) -> bool:
    """Inside the transaction restoring a scope: once no scope is revoked any more, a job
    paused for them resumes from its checkpoint after the commit."""
    if connection.state != S.REENCRYPTING or revoked_scopes_note(connection.pk):
        return False
    connection_id = connection.pk
    transaction.on_commit(lambda: resume_after_restore(connection_id))
    return True


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
    for job in ReencryptionJob.objects.select_for_update(of=("self",), no_key=True).filter(
        connection=connection, state__in=ReencryptionJob.ACTIVE_STATES
    ):
        fail_locked(job, "Key access was not restored within the restore window.")
