"""The key-usage events of the job's AWS calls, written durably before the work that used them.

Every AWS call the job makes with the customer's role really happened in the customer's
account, whether or not the batch that made it ever commits. So the calls of a batch are
written (one committed transaction of their own) as soon as the batch's calls have returned
and *before* the checkpoint transaction that depends on them: a worker killed after that
point redoes the batch and records the repeated calls too. Nothing is buffered past a commit
of the job, and calls made == events recorded.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from connections import aws
from connections.key_usage import record_key_usages
from reencryption.models import ReencryptionJob


def record_calls(org, job_id: int, calls: list[aws.KmsCall]) -> None:
    """Write the key-usage events of ``calls`` and add them to the job's KMS call count, in
    one transaction that commits before this returns.

    The events are appended to the org's chain in one go (``audit.services.append_events``:
    one lock of the chain head, one INSERT, the hourly counts once per hour), in the order the
    calls returned.
    Lock order as everywhere: the job row (the counter) before the audit chain head.
    """
    if not calls:
        return
    kms = sum(1 for c in calls if c.service == "kms.amazonaws.com")
    with transaction.atomic(durable=True):  # committed here, never inside a caller's transaction
        if kms:
            ReencryptionJob.objects.filter(pk=job_id).update(kms_calls=F("kms_calls") + kms)
        record_key_usages(org=org, calls=calls)
