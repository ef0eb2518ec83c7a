"""Step 3, verify: every DEK is unwrapped from its *new* wrapping in every region (the regions
must agree) and every record is opened with it (AES-GCM authenticates each one). A DEK or record
that appeared during the job and is not under the new keys yet is processed here. One failure
fails the job, and nothing is retired."""

from __future__ import annotations

import hmac
import time
from collections import defaultdict
from contextlib import nullcontext

from django.db import connection, transaction

from connections import aws
from connections.models import DataKey, DataKeyWrapping
from dataplane.envelope import DataKeyCipher, DecryptionFailed
from reencryption.job.base import apply_updates
from reencryption.job.common import J, JobFailed, P, Stop, done_future, job_audit, job_event
from reencryption.job.rewrap import RewrapPhase
from reencryption.job.rotate import ROW_FIELDS, RotatePhase
from reencryption.models import ReencryptionJob, ReencryptionMode

#: Records fetched per round trip while verifying.
VERIFY_CHUNK = 10_000


class VerifyPhase(RewrapPhase, RotatePhase):
    def _verify_batch(self, job: ReencryptionJob) -> bool:
        started = time.monotonic()
        self._check_keys()
        if job.mode == ReencryptionMode.REWRAP:
            return self._verify_rewrap(job, started)
        return self._verify_rotate(job, started)

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
                self._pending[dek_id] = [done_future(unwrap(item)) for item in items]
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
            raise JobFailed(f"Data key #{dek_id} unwraps to different keys in two regions.")
        cipher = self._ciphers[dek_id] = DataKeyCipher(dek_id=dek_id, dek=first)
        del plaintexts, first
        return cipher

    def _new_blobs(self, dek_ids: list[int], job: ReencryptionJob) -> dict[int, dict[str, bytes]]:
        blobs: dict[int, dict[str, bytes]] = defaultdict(dict)
        for wrapping in DataKeyWrapping.objects.filter(
            data_key_id__in=dek_ids,
            regional_key_id__in=list(job.new_keys.values()),
            retired_at=None,
        ):
            blobs[wrapping.data_key_id][wrapping.region] = bytes(wrapping.blob)
        return blobs

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
        blobs = self._new_blobs([pk for pk, _ in rows], job)
        for wrapping in stragglers:
            blobs[wrapping.data_key_id][wrapping.region] = wrapping.blob
        incomplete = [pk for pk, _ in rows if len(blobs[pk]) != len(self.regions)]
        if incomplete:
            raise JobFailed(f"Data key #{incomplete[0]} is not wrapped under every new key.")
        self._ciphers.clear()
        self._unwrap_new([(pk, context, blobs[pk]) for pk, context in rows], job)
        try:
            with self._streaming():
                opened = self._open_records(
                    self._org_records()
                    .filter(data_key_id__in=[pk for pk, _ in rows])
                    .order_by("data_key_id")  # the DEKs in the order their unwraps were started
                    .values_list("pk", "app_instance_id", "data_key_id", "ciphertext")
                    .iterator(chunk_size=VERIFY_CHUNK)
                )
            for pk, _context in rows:  # DEKs without records are verified too
                self._cipher(pk)
        finally:
            self._abandon_unwraps()
            self._ciphers.clear()
        self.record_calls()  # committed before the checkpoint that depends on the calls
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

    def _streaming(self):
        """Where records are streamed from: on PostgreSQL, a (read-only) transaction, whose
        server-side cursor hands rows over as they are read (outside one, the cursor is held
        past its transaction and computed whole before the first row comes back). SQLite's
        cursors stream anyway, and a transaction there would hold its write lock."""
        return transaction.atomic() if connection.vendor == "postgresql" else nullcontext()

    def _open_records(self, rows) -> int:
        """AES-GCM-open every record with the DEK unwrapped from its new wrapping (rows come
        in runs of one DEK: its cipher is looked up, and bound to the record's org and app,
        once per run)."""
        org_id, ciphers, cipher_of = self.org_id, self._ciphers, self._cipher
        failed: list[int] = []
        opened = 0
        run, opener = None, None
        for pk, app_id, dek_id, blob in rows:
            if (dek_id, app_id) != run:
                cipher = ciphers.get(dek_id) or cipher_of(dek_id)
                run = (dek_id, app_id)
                opener = (
                    cipher.record_functions(org_id=org_id, app_instance_id=app_id)[1]
                    if cipher is not None
                    else None
                )
            try:
                if opener is None:
                    raise DecryptionFailed("its data key was not verified")
                opener(bytes(blob), pk)
            except DecryptionFailed:
                failed.append(pk)
            opened += 1
        if failed:
            shown = ", ".join(f"#{pk}" for pk in failed[:10])
            raise JobFailed(
                f"{len(failed)} record(s) did not decrypt under the new keys ({shown}); "
                "nothing was retired."
            )
        return opened

    def _verify_rotate(self, job: ReencryptionJob, started: float) -> bool:
        rows = self._records_after(
            job.verify_last_id, upto=None, limit=self._record_batch_limit(job), fields=ROW_FIELDS
        )
        self._note_record_sizes(rows, blob_at=ROW_FIELDS.index("ciphertext"))
        if not rows:
            return self._enter_retire(job)
        stale = [row for row in rows if not self._is_fresh(row[2], job)]
        if stale:  # written during the job under a DEK that is not fresh: rotate them now
            updates = self._rotate_records(stale, job)  # KMS calls (if any) outside transactions
            self.record_calls()
            with transaction.atomic():
                apply_updates(updates)
            rows = list(
                self._org_records()
                .filter(pk__gt=job.verify_last_id, pk__lte=rows[-1][0])
                .order_by("pk")
                .values_list(*ROW_FIELDS)
            )
        unverified = sorted({row[2] for row in rows} - set(self._ciphers) - set(self._pending))
        if unverified:
            contexts = dict(
                DataKey.objects.filter(pk__in=unverified).values_list("pk", "encryption_context")
            )
            blobs = self._new_blobs(unverified, job)
            missing = [pk for pk in unverified if len(blobs[pk]) != len(self.regions)]
            if missing:
                raise JobFailed(f"Data key #{missing[0]} is not wrapped under every new key.")
            self._unwrap_new([(pk, contexts[pk], blobs[pk]) for pk in unverified], job)
        opened = self._open_records((pk, app, dek, blob) for pk, app, dek, _v, blob in rows)
        self.record_calls()  # committed before the checkpoint that depends on the calls
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
                raise Stop
            if locked.phase == P.VERIFY:
                locked.phase = P.RETIRE
                locked.save(update_fields=["phase"])
                job_event(
                    locked,
                    "verified",
                    f"Verified: all {locked.verified} records decrypt under the new keys.",
                )
                job_audit(
                    locked,
                    "VerifyReencryption",
                    recordsVerified=locked.verified,
                    kmsCalls=locked.kms_calls,
                )
        return True
