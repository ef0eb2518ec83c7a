"""Step 2, mode ``rotate`` (for a suspected DEK compromise): every record is decrypted and
re-encrypted through the data plane under the app's current DEK, which the switch made new and
which lives under the new keys. Conditional updates (``version`` and ``data_key`` unchanged)
let a concurrent app write win."""

from __future__ import annotations

import time

from connections.models import DataKey, DataKeyWrapping
from dataplane import dek_cache
from dataplane import records as dataplane
from reencryption.job.base import RunnerBase
from reencryption.job.common import JobFailed
from reencryption.models import ReencryptionJob


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

    def _rotate_records(self, rows, job: ReencryptionJob) -> list[tuple]:
        """Re-encrypt records not under a fresh DEK: ``(pk, version, old dek, new dek, blob)``.

        The data plane records its own KMS calls as it makes them."""
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
                    raise JobFailed(f"App #{app_id} got no data key under the new keys.")
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
