"""Step 2, mode ``rotate`` (for a suspected DEK compromise): every record is decrypted and
re-encrypted under the app's current DEK, which the switch made new and which lives under the
new keys. A batch's old DEKs are unwrapped by the job (in its KMS threads, like the
verification's), its records sealed through the data plane (``encrypt_for``), and written back
in one set-based UPDATE whose per-record conditions (``version`` and ``data_key`` unchanged)
let a concurrent app write win (:func:`reencryption.job.base.apply_updates`)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from django.conf import settings

from connections import aws
from connections.models import DataKey, DataKeyWrapping
from dataplane import dek_cache
from dataplane import records as dataplane
from dataplane.envelope import DataKeyCipher, DecryptionFailed
from reencryption.job.base import RunnerBase
from reencryption.job.common import JobFailed
from reencryption.models import ReencryptionJob

#: A record as the rotation (and the verification of a rotation) reads it.
ROW_FIELDS = ("pk", "app_instance_id", "data_key_id", "version", "ciphertext")
#: When a batch needs an old DEK not unwrapped yet, the old DEKs of the records of this many
#: batches ahead are unwrapped in the same round of KMS calls, at most ``LOOKAHEAD_DEKS``.
LOOKAHEAD_BATCHES = 8
LOOKAHEAD_DEKS = 32


class RotatePhase(RunnerBase):
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

    def _rotate_records(self, rows, job: ReencryptionJob, *, ahead: bool = False) -> list[tuple]:
        """Re-encrypt records not under a fresh DEK: ``(pk, version, old dek, new dek, blob)``.

        Each record is opened with its old DEK, unwrapped by the job (:meth:`_old_ciphers_for`),
        and sealed through the data plane (``encrypt_for``: its guard and key cache), which
        records its own KMS calls as it makes them. ``ahead``: the rotation walks the records
        in id order, so the DEKs of the records that follow are unwrapped with this batch's."""
        fresh = self._fresh
        stale = [row for row in rows if not (fresh.get(row[2]) or self._is_fresh(row[2], job))]
        if not stale:
            return []
        ciphers = self._old_ciphers_for(
            sorted({row[2] for row in stale}), job, after=rows[-1][0] if ahead else None
        )
        org_id, encrypt_for = self.org_id, dataplane.encrypt_for
        openers: dict[tuple[int, int], Callable[[bytes, int], bytes]] = {}
        updates = []
        for pk, app_id, dek_id, version, blob in stale:
            blob = bytes(blob)
            opener = openers.get((dek_id, app_id))
            if opener is None:  # open(blob, (org, app, record)), its fixed AAD part packed once
                opener = ciphers[dek_id].record_functions(org_id=org_id, app_instance_id=app_id)[1]
                openers[dek_id, app_id] = opener
            try:
                plaintext = opener(blob, pk)
            except DecryptionFailed:  # e.g. a header naming another key: as the data plane reads
                plaintext = dataplane.decrypt_for(app_instance_id=app_id, record_id=pk, blob=blob)
            try:
                new_dek, new_blob = encrypt_for(
                    app_instance_id=app_id, record_id=pk, plaintext=plaintext
                )
                if not (fresh.get(new_dek) or self._is_fresh(new_dek, job)):
                    new_dek, new_blob = self._encrypt_under_new_keys(
                        app_id, pk, plaintext, new_dek, job
                    )
            finally:
                del plaintext
            updates.append((pk, version, dek_id, new_dek, new_blob))
        return updates

    def _old_ciphers_for(
        self, dek_ids: list[int], job: ReencryptionJob, *, after: int | None
    ) -> dict[int, DataKeyCipher]:
        """These old DEKs, unwrapped by the job with its own session (KMS ``Decrypt``, in the
        KMS threads; recorded like every call of the job).

        When one is missing and ``after`` is given, the old DEKs of the next
        ``LOOKAHEAD_BATCHES`` batches of records after ``after`` are unwrapped in the same round
        (at most ``LOOKAHEAD_DEKS``): one round of KMS calls for several batches, not one per
        batch. Held for ``DEK_CACHE_MAX_AGE_S`` and at most ``DEK_CACHE_MAX_ENTRIES`` of them
        (the data plane's limits), as ciphers, never raw bytes; dropped when the run ends."""
        held = self._old_ciphers
        now = time.monotonic()
        missing = []
        for dek_id in dek_ids:
            entry = held.get(dek_id)
            if entry is None or entry[0] <= now:
                missing.append(dek_id)
            else:
                held.move_to_end(dek_id)
        if missing:
            ahead = self._old_deks_ahead(after, job, skip=set(missing)) if after else []
            expires_at = now + float(settings.DEK_CACHE_MAX_AGE_S)
            for dek_id, cipher in self._unwrap_old(missing, optional=ahead):
                held[dek_id] = (expires_at, cipher)
                held.move_to_end(dek_id)
        limit = max(int(settings.DEK_CACHE_MAX_ENTRIES), len(dek_ids))
        while len(held) > limit:
            held.popitem(last=False)
        return {dek_id: held[dek_id][1] for dek_id in dek_ids}

    def _old_deks_ahead(self, after: int, job: ReencryptionJob, *, skip: set[int]) -> list[int]:
        """Old DEKs (not held yet) of the records that the next batches will rotate."""
        now = time.monotonic()
        held = self._old_ciphers
        rows = self._records_after(
            after,
            upto=job.record_watermark,
            limit=LOOKAHEAD_BATCHES * job.batch_size,
            fields=("data_key_id",),
        )
        ahead: list[int] = []
        for dek_id in dict.fromkeys(row[0] for row in rows):  # in order of first use
            if len(ahead) >= LOOKAHEAD_DEKS:
                break
            entry = held.get(dek_id)
            if dek_id in skip or (entry is not None and entry[0] > now):
                continue
            if not self._is_fresh(dek_id, job):
                ahead.append(dek_id)
        return ahead

    def _unwrap_old(
        self, dek_ids: list[int], *, optional: list[int] = ()
    ) -> list[tuple[int, DataKeyCipher]]:
        """Unwrap ``dek_ids`` (each must be a live DEK of the org with a stored copy) and,
        in the same round, those of ``optional`` that are."""
        wanted = [*dek_ids, *optional]
        contexts = dict(
            self._org_deks().filter(pk__in=wanted).values_list("pk", "encryption_context")
        )
        copies: dict[int, list[DataKeyWrapping]] = defaultdict(list)
        for wrapping in DataKeyWrapping.objects.filter(
            data_key_id__in=list(contexts), retired_at=None
        ).select_related("regional_key"):
            copies[wrapping.data_key_id].append(wrapping)
        order = {region: i for i, region in enumerate(self.regions)}
        required = set(dek_ids)
        plan = []
        for dek_id in wanted:
            wrappings = sorted(  # as the data plane unwraps: primary region first, newest first
                copies[dek_id],
                key=lambda w: (order.get(w.region, len(order)), -w.regional_key.generation),
            )
            if dek_id not in contexts or not wrappings:
                if dek_id in required:
                    raise JobFailed(f"Data key #{dek_id} has no wrapped copy to unwrap.")
                continue
            plan.append(
                (
                    dek_id,
                    contexts[dek_id],
                    [(w.region, w.regional_key.key_arn, bytes(w.blob)) for w in wrappings],
                )
            )
        self.session()  # assumed once, before the threads share it
        return self._parallel(self._unwrap_one, plan)

    def _unwrap_one(self, item) -> tuple[int, DataKeyCipher]:
        """``Decrypt`` one stored copy of a DEK: the next region's copy if one does not answer
        (throttled, unreachable …); a refusal is raised at once (it revokes)."""
        dek_id, context, copies = item
        session = self.session()
        failure: aws.AwsError | None = None
        for region, key_arn, blob in copies:
            try:
                plaintext = session.decrypt(region, key_arn, blob, context)
            except aws.AwsError as err:
                err.key_arn = key_arn
                if isinstance(err, aws.REVOKING_CAUSES):
                    raise
                failure = err
                continue
            try:
                return dek_id, DataKeyCipher(dek_id=dek_id, dek=plaintext)
            finally:
                del plaintext
        if failure is None:
            raise JobFailed(f"Data key #{dek_id} has no wrapped copy to unwrap.")
        raise failure

    def _encrypt_under_new_keys(
        self, app_id: int, pk: int, plaintext: bytes, stale_dek: int, job: ReencryptionJob
    ) -> tuple[int, bytes]:
        """The app's current DEK was created under the old keys in a race with the switch:
        unseat it, and encrypt under the DEK that replaces it (one more try)."""
        DataKey.objects.filter(pk=stale_dek, is_current=True).update(is_current=False)
        dek_cache.CACHE.forget_current(app_id)
        new_dek, new_blob = dataplane.encrypt_for(
            app_instance_id=app_id, record_id=pk, plaintext=plaintext
        )
        if self._is_fresh(new_dek, job):
            return new_dek, new_blob
        DataKey.objects.filter(pk=new_dek, is_current=True).update(is_current=False)
        dek_cache.CACHE.forget_current(app_id)
        raise JobFailed(f"App #{app_id} got no data key under the new keys.")

    def _rotate_batch(self, job: ReencryptionJob) -> bool:
        started = time.monotonic()
        self._check_keys()
        rows = self._records_after(
            job.last_id,
            upto=job.record_watermark,
            limit=self._record_batch_limit(job),
            fields=ROW_FIELDS,
        )
        self._note_record_sizes(rows, blob_at=ROW_FIELDS.index("ciphertext"))
        if not rows:
            self._enter_verify(job, note=f"{job.done} records re-encrypted under new data keys.")
            return True
        updates = self._rotate_records(rows, job, ahead=True)
        self.record_calls()  # committed before the checkpoint that depends on the calls
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
