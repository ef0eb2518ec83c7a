"""The lease of a job: one run at a time holds it (token, host, pid, heartbeat).

A run that finds the lease of a dead process (same host, pid gone) or a heartbeat older than
``REENCRYPTION_LEASE_S`` takes over and continues from the checkpoint.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connections.models import ByokConnection
from reencryption.job.common import J, S
from reencryption.models import ReencryptionJob


def holder() -> tuple[str, int]:
    return socket.gethostname()[:255], os.getpid()


def pid_alive(pid: int) -> bool:
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
    lease_s = float(settings.REENCRYPTION_LEASE_S)
    if job.heartbeat_at is None or now - job.heartbeat_at > timedelta(seconds=lease_s):
        return False
    host, pid = holder()
    if job.lease_host == host and job.lease_pid and job.lease_pid != pid:
        return pid_alive(job.lease_pid)
    return True


@transaction.atomic
def acquire(job_id: int) -> str | None:
    """Take the job's lease; ``None`` when the job is not to run now or another run holds it."""
    job = (
        ReencryptionJob.objects.select_for_update(of=("self",), no_key=True)
        .filter(pk=job_id)
        .first()
    )
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
    host, pid = holder()
    job.lease_token, job.lease_host, job.lease_pid = uuid.uuid4().hex, host, pid
    job.heartbeat_at = now
    job.save(update_fields=["lease_token", "lease_host", "lease_pid", "heartbeat_at"])
    return job.lease_token


def release(job_id: int, token: str) -> None:
    # An empty token means "no lease", not a credential.
    ReencryptionJob.objects.filter(pk=job_id, lease_token=token).update(
        lease_token="",
        lease_host="",
        lease_pid=None,  # nosec B106
    )
