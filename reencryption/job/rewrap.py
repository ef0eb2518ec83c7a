"""Step 2, mode ``rewrap`` (the default): each DEK of the org gets a wrapped copy under each new
key: KMS ``ReEncrypt`` in the same region (the DEK never leaves KMS in plaintext), ``Decrypt`` +
``Encrypt`` when a region had no copy. Records are not touched."""

from __future__ import annotations

import time
from collections import defaultdict

from connections import aws
from connections.models import DataKeyWrapping
from reencryption.job.base import RunnerBase
from reencryption.job.common import JobFailed
from reencryption.models import ReencryptionJob


class RewrapPhase(RunnerBase):
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
        self.record_calls()  # committed before the checkpoint that depends on the calls
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
                    raise JobFailed(f"Data key #{dek_id} has no wrapped copy to re-wrap.")
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
