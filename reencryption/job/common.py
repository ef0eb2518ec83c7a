"""What every part of the job shares: its settings, its stop signals and the state changes
made while holding the job row's lock (events, audit records, pause, failure)."""

from __future__ import annotations

from concurrent.futures import Future

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from connections import notifications
from connections.lifecycle import transition
from connections.models import ByokConnection, ConnectionState, RegionalKey, ScopedRevocation
from connections.scope_lifecycle import OPEN_STATES
from reencryption.models import (
    ReencryptionEvent,
    ReencryptionJob,
    ReencryptionMode,
    ReencryptionRequest,
)

S = ConnectionState
J = ReencryptionJob.State
P = ReencryptionJob.Phase
JOB_IDENTITY = {"type": "AWSService", "invokedBy": "byok-portal-reencryption"}

#: Retire attempts per run that may find stragglers before the run gives up (sweeper retries).
MAX_RETIRE_ATTEMPTS = 5


def default_batch_size(mode: str) -> int:
    if mode == ReencryptionMode.ROTATE:
        return int(settings.REENCRYPTION_ROTATE_BATCH)
    return int(settings.REENCRYPTION_REWRAP_BATCH)


def default_batch_interval_s() -> float:
    return float(settings.REENCRYPTION_BATCH_INTERVAL_S)


class Stop(Exception):
    """End this run: the job is paused, waiting, finished, failed or its lease was lost."""


class JobFailed(Exception):
    """The job cannot succeed (corrupt data, misconfiguration); the message is for people."""


def done_future(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


# --- State changes (the caller holds the job row's lock) -------------------------------------


def job_event(job: ReencryptionJob, kind: str, message: str, *, internal: bool = False) -> None:
    ReencryptionEvent.objects.create(
        request_id=job.request_id, kind=kind, message=message, internal=internal
    )


def job_audit(job: ReencryptionJob, event_name: str, *, org=None, error: str = "", **elements):
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


def pause_locked(job: ReencryptionJob, reason: str) -> None:
    if job.state != J.RUNNING:
        return
    job.state = J.PAUSED
    job.paused_at = timezone.now()
    job.state_reason = reason[:500]
    job.rate = 0.0
    job.save(update_fields=["state", "paused_at", "state_reason", "rate"])
    job_event(job, "paused", f"{reason} Progress is kept: {job.done} of {job.total} {job.unit}.")
    job_audit(job, "PauseReencryption", reason=reason[:300], done=job.done, total=job.total)


def fail_locked(job: ReencryptionJob, reason: str) -> None:
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
    connection = ByokConnection.objects.select_for_update(no_key=True).get(pk=job.connection_id)
    if connection.state == S.REENCRYPTING:
        transition(
            connection,
            S.ACTIVE,
            reason="Re-encryption failed; your data stays readable under your old and new keys.",
        )
    job_event(job, "failed", f"The job failed: {reason}")
    job_audit(job, "FailReencryption", error=reason)
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


def revoked_scopes_note(connection_id: int) -> str:
    """Why the job waits while a site, app or period of the org is revoked ("" if none): it
    pauses rather than skip them, because retiring the old keys would strand the data of a
    scope it skipped; it resumes from its checkpoint once every scope is restored."""
    labels = [
        r.label
        for r in ScopedRevocation.objects.filter(
            organization__byok_connection__id=connection_id, state__in=OPEN_STATES
        ).select_related("site", "app_instance__site")[:5]
    ]
    if not labels:
        return ""
    return (
        f"Paused: key access of {', '.join(labels)} is revoked. The job resumes from its "
        "checkpoint once every revoked scope is restored; nothing is skipped or retired meanwhile."
    )
