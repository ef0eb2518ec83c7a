"""Step 1, the switch (one transaction, connection ``active → re-encrypting``), and the
resumption of a paused job."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from connections.lifecycle import transition
from connections.models import ByokConnection, DataKey, RegionalKey
from dataplane import dek_cache
from dataplane.models import AppRecord
from reencryption.job.base import RunnerBase
from reencryption.job.common import J, JobFailed, P, S, Stop, fail_locked, job_audit, job_event
from reencryption.models import ReencryptionJob, ReencryptionMode, ReencryptionRequest


class SwitchPhase(RunnerBase):
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
                fail_locked(
                    job,
                    f"The key connection is {connection.get_state_display().lower()}; "
                    "re-encryption needs an active connection.",
                )
                outcome = "failed"
            else:
                self._switch_locked(connection, job)
                outcome = "started"
        if outcome != "started":
            raise Stop
        return True

    def _switch_locked(self, connection: ByokConnection, job: ReencryptionJob) -> None:
        request = ReencryptionRequest.objects.get(pk=job.request_id)
        now = timezone.now()
        current = {
            k.region: k
            for k in RegionalKey.objects.select_for_update(no_key=True).filter(
                connection=connection, is_current=True
            )
        }
        missing = [r for r in self.regions if r not in current or not request.key_arns.get(r)]
        if missing:
            raise JobFailed(f"No current or new key for {', '.join(missing)}.")
        same = [r for r in self.regions if current[r].key_arn == request.key_arns[r]]
        if same:
            raise JobFailed(f"The new key in {', '.join(same)} is the current key.")
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
        job_event(
            job,
            "started",
            f"The job started: new writes use new data keys under your new keys; {what}.",
        )
        job_audit(
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
                job_event(
                    job,
                    "resumed",
                    f"Key access is back: the job resumed at {job.done} of {job.total} "
                    f"{job.unit} (paused for {int(paused_for.total_seconds())} s).",
                )
                job_audit(job, "ResumeReencryption", done=job.done, total=job.total)
        if not resumed:
            raise Stop
        return True
