"""The re-encryption job: moves an organization's BYOK data to new KMS keys with apps online.

A job (:class:`~reencryption.models.ReencryptionJob`) belongs to one approved request. It runs in
steps; each step is one transaction on the job row (locked with ``select_for_update``) after
any AWS calls, which happen outside transactions. The job row is the checkpoint: phase,
``last_id`` / ``verify_last_id``, counters, rate. Nothing is kept in the task's result.

1. **Switch** (one transaction, connection ``active → re-encrypting``): the new regional keys
   become current (``generation + 1``); the old ones stay, not current, to unwrap what is not
   re-wrapped yet. Every app's current data key (DEK) stops being current, so the next write
   creates a DEK under the new keys (``GenerateDataKey``); other processes stop writing with
   their cached DEK within ``DEK_GUARD_TTL_S`` (``dataplane.dek_cache``: the guard follows the
   database's current DEK).
2. **Re-wrap** (mode ``rewrap``, the default): each DEK of the org gets a wrapped copy under
   each new key: KMS ``ReEncrypt`` in the same region (the DEK never leaves KMS in plaintext),
   ``Decrypt`` + ``Encrypt`` when a region had no copy. Records are not touched: the cost is
   proportional to DEKs, not records. Batches of ``batch_size`` DEKs, KMS calls in parallel
   (``REENCRYPTION_KMS_CONCURRENCY``).
   **Rotate** (mode ``rotate``, for a suspected DEK compromise): every record is decrypted and
   re-encrypted under the app's current DEK, which the switch made new and which lives under
   the new keys. Batches of ``batch_size`` records in id order: their old DEKs are unwrapped by
   the job (KMS ``Decrypt`` in its threads, those of the next few batches in the same round),
   the records sealed through the data plane (``encrypt_for``) and written back in one
   set-based UPDATE per batch whose per-record conditions (``version`` and ``data_key``
   unchanged) let a concurrent app write win.
3. **Verify**: every DEK is unwrapped from its *new* wrapping in every region (the regions
   must agree) and every record is opened with it (AES-GCM authenticates each one). A DEK or
   record that appeared during the job and is not under the new keys yet is processed here.
   One failure fails the job, and nothing is retired.
4. **Retire** (one transaction, ``re-encrypting → active``): the invariants are checked again
   under the connection's lock; wrappings under the old keys are marked retired (reads ignore
   them), the old regional keys get ``retired_at``; in rotate mode the old DEKs, which no
   record uses any more, are destroyed (their wrapped copies erased). The org's admins are
   told the old keys may be disabled.

Reads never stop: until the retire step a DEK always has at least its old wrappings, and the
data plane unwraps with the newest generation first (``dataplane.records._unwrap``).

**Crashes and duplicates.** A run holds a lease on the job (token, host, pid, heartbeat). A
second delivery of the task finds the lease live and returns; a run that finds the lease of
a dead process (same host, pid gone) or a heartbeat older than ``REENCRYPTION_LEASE_S`` takes
over and continues from the checkpoint. Each batch commits only if the checkpoint is still the
one it started from, and wrappings are unique per (DEK, key), so a batch done twice changes
nothing. A beat task (:func:`sweep_jobs`) re-enqueues due or stranded jobs, so a lost message
never strands a job; ``apply_async(eta=…)`` starts it on time.

**Kill switch.** Revocation pauses the job in the revoking transaction
(:func:`pause_jobs_for_revocation`), and each step re-reads the connection state, so a run
stops at its next step. Restore puts a connection with a paused job back to
``re-encrypting`` (:func:`return_to_reencrypting_after_restore`, on the
``key_access_restored`` signal).
A revoked site, app instance or period of data (``connections.ScopedRevocation``) pauses the
job too (it would otherwise have to skip the scope's data keys and then retire the only keys
that unwrap them): a running job pauses in the revoking transaction and at its next step, a
scheduled one waits, and the job's status says which scopes it waits for; it resumes from its
checkpoint when the last of them is restored.
A KMS refusal met by the job (key disabled, access denied …) revokes like the data plane does.

Every step is an audit event of the org (``StartReencryption`` … ``CompleteReencryption``);
every AWS call is a key-usage event (``connections.key_usage``), with the encryption context.
The events of a batch's calls are committed as soon as the calls return, in one transaction
(appended to the org's chain at once, ``audit.services.append_events``), before the
checkpoint that depends on them (:mod:`reencryption.job.audit`): a worker killed at any later
point loses no record of a call it made, and a batch redone after a crash records its
repeated calls too (calls made == events recorded).

Modules: :mod:`~reencryption.job.common` (settings, stop signals, locked state changes),
:mod:`~reencryption.job.lease`, :mod:`~reencryption.job.audit`, :mod:`~reencryption.job.base`
(session, KMS threads, checks, checkpoint commit), one module per phase
(:mod:`~reencryption.job.switch`, :mod:`~reencryption.job.rewrap`,
:mod:`~reencryption.job.rotate`, :mod:`~reencryption.job.verification`,
:mod:`~reencryption.job.retirement`) and :mod:`~reencryption.job.runner` (the run loop, entry
points and lifecycle hooks). Settings: ``REENCRYPTION_*`` in ``byokportal/settings.py``.
"""

from reencryption.job.common import default_batch_interval_s, default_batch_size
from reencryption.job.runner import (
    enqueue_job,
    fail_jobs_for_expiry,
    pause_jobs_for_revocation,
    pause_jobs_for_scope,
    resume_after_restore,
    resume_after_scope_restore,
    return_to_reencrypting_after_restore,
    run_job,
    sweep_jobs,
)

__all__ = [
    "default_batch_interval_s",
    "default_batch_size",
    "enqueue_job",
    "fail_jobs_for_expiry",
    "pause_jobs_for_revocation",
    "pause_jobs_for_scope",
    "resume_after_restore",
    "resume_after_scope_restore",
    "return_to_reencrypting_after_restore",
    "run_job",
    "sweep_jobs",
]
