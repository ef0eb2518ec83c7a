"""Step 4, retire (one transaction, ``re-encrypting → active``): the invariants are checked
again under the connection's lock; wrappings under the old keys are marked retired (reads
ignore them), the old regional keys get ``retired_at``; in rotate mode the old DEKs, which no
record uses any more, are destroyed (their wrapped copies erased). The org's admins are told
the old keys may be disabled."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.formats import date_format

from connections import notifications
from connections.lifecycle import transition
from connections.models import DataKey, DataKeyWrapping, RegionalKey
from dataplane import dek_cache
from dataplane.models import AppRecord
from orgs import notices
from reencryption.job.base import RunnerBase
from reencryption.job.common import MAX_RETIRE_ATTEMPTS, J, P, S, Stop, job_audit, job_event
from reencryption.models import ReencryptionJob, ReencryptionMode, ReencryptionRequest


class RetirePhase(RunnerBase):
    def _retire(self, job: ReencryptionJob) -> bool:
        self._retire_attempts += 1
        if self._retire_attempts > MAX_RETIRE_ATTEMPTS:
            self._note_error("New data keys keep appearing under the old keys; retrying later.")
            raise Stop
        new_ids = list(job.new_keys.values())
        n_regions = len(self.regions)
        with transaction.atomic():
            connection = self._lock_connection()
            locked = self._lock_job()
            if locked is None or locked.state != J.RUNNING or locked.phase != P.RETIRE:
                raise Stop
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
                else:
                    fresh = deks.filter(pk__gt=locked.dek_watermark, under_new=n_regions)
                    fresh_ids = list(fresh.values_list("pk", flat=True))
                    stale_current = (
                        self._org_deks().filter(is_current=True).exclude(pk__in=fresh_ids)
                    )
                    stale_current.update(is_current=False)
                    straggler = self._first_record_not_under(fresh_ids)
                if straggler is not None:
                    locked.phase, locked.verify_last_id = P.VERIFY, straggler - 1
                    locked.save(update_fields=["phase", "verify_last_id"])
                    outcome = "again"
                else:
                    self._retire_locked(connection, locked, new_ids)
                    outcome = "done"
        if outcome == "check":
            self._check_connection()
        return outcome == "again"

    def _first_record_not_under(self, dek_ids: list[int]) -> int | None:
        """The smallest id of the org's records whose DEK is not one of ``dek_ids``.

        App by app, so that each query walks the (app, id) index in order; one query over the
        org's apps would walk the whole table (every org's records) in id order instead."""
        firsts = (
            AppRecord.objects.filter(app_instance_id=app_id)
            .exclude(data_key_id__in=dek_ids)
            .order_by("pk")
            .values_list("pk", flat=True)
            .first()
            for app_id in self.app_ids
        )
        return min((pk for pk in firsts if pk is not None), default=None)

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
        job_event(
            job,
            "completed",
            f"Completed in {took} s: every record decrypts under the new keys; the old keys "
            f"are retired ({retired} wrapped data keys retired"
            + (f", {destroyed} old data keys destroyed" if destroyed else "")
            + "). You may now disable the old keys in AWS KMS.",
        )
        job_audit(
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
