"""The BYOK data plane: how apps store and read their data under the customer's keys.

Apps call :func:`store_record`, :func:`read_record` / :func:`decrypt_record` and
:func:`update_record`. Each record is AES-256-GCM ciphertext (``dataplane.envelope``) under its app
instance's data key (DEK), bound to org, app instance and record id.

**Refusal.** Before every use of a key, :data:`dataplane.dek_cache.GUARD` confirms (from a memo at
most ``DEK_GUARD_TTL_S`` old, else one query) that the org's connection is in
``connections.lifecycle.USABLE_STATES`` and the app instance is not suspended — on the hot path
through the key's lease, which ends when the guard's answer stops being fresh. Otherwise the
call raises :class:`AppSuspended` with a reason the customer can read, and that org's cached
keys are purged in this process: stale plaintext is never returned. See
``dataplane/dek_cache.py``.

**Data keys.** One current DEK per app instance, created on the first write: KMS
``GenerateDataKey`` under the connection's current key in the location's primary region,
with the encryption context ``{"org", "site", "app"}``; in dual-region locations the same DEK
is also ``Encrypt``-ed under the other region's key. Only these wrapped blobs are stored
(:class:`~dataplane.models.DataKeyWrapping`). A DEK is rotated (a new current one created) when it
is older than ``DEK_ROTATE_AFTER_S`` (one day), which also bounds how many random nonces any
one key sees; older DEKs keep decrypting their records, and updates move records to the
current DEK.

**KMS calls.** On a cache miss a DEK is unwrapped with ``Decrypt`` in the primary region,
falling back to the other region's wrapping when the primary is throttled or unreachable.
Because moto (unlike AWS) does not refuse a disabled key, each miss also asks ``DescribeKey``
first and treats any state but ``Enabled`` as a refusal. A refusal — disabled, pending
deletion, not found, access denied, role unavailable (``aws.REVOKING_CAUSES``) — revokes the
connection at once (``connections.services.revoke_after_aws_refusal``). In steady state a process
makes two KMS calls per DEK per ``DEK_CACHE_MAX_USES`` uses or ``DEK_CACHE_MAX_AGE_S``
seconds, whichever comes first.

Do not wrap data-plane calls in a transaction that rolls back on :class:`AppSuspended`: the
revocation written on a KMS refusal would roll back with it.
"""

from __future__ import annotations

import time

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from connections.lifecycle import USABLE_STATES
from connections.models import DataKey
from dataplane.dek_cache import CACHE, GUARD, AppAccess, CachedKey, entry_for_header, writer_of
from dataplane.envelope import HEADER_BYTES, DecryptionFailed, key_id_of, parse_header
from dataplane.errors import AppSuspended, KeysUnavailable, NotByokApp
from dataplane.health import forget_health_throttle, note_failure, note_read_ok, write_health
from dataplane.key_store import reading_entry, writing_entry
from dataplane.models import AppRecord
from orgs.models import AppInstance

__all__ = [
    "AppSuspended",
    "DecryptionFailed",
    "KeysUnavailable",
    "NotByokApp",
    "decrypt_for",
    "decrypt_record",
    "encrypt_for",
    "ensure_current_data_key",
    "forget_health_throttle",
    "live_read_check",
    "read_record",
    "store_record",
    "update_record",
    "write_health",
]


# --- Access -----------------------------------------------------------------------------------


PERIOD_REVOKED = (
    "This record was written during a period of data whose key access was revoked; it stays "
    "unreadable until that period is restored."
)


def _app_id(app_instance) -> int:
    return app_instance if isinstance(app_instance, int) else app_instance.pk


_BYOK = str(AppInstance.Encryption.BYOK)


def _access(app_instance_id: int) -> AppAccess:
    """The app's access from the guard, or the refusal (one memo lookup, or one query)."""
    return _access_until(app_instance_id)[1]


def _access_until(app_instance_id: int) -> tuple[float, AppAccess]:
    """``(fresh until, access)`` from the guard, or the refusal."""
    answer = GUARD.check_until(app_instance_id)
    if answer is not None and answer[1].ok:  # usable, and a BYOK app
        return answer
    access = None if answer is None else answer[1]
    if access is None:
        raise AppInstance.DoesNotExist(f"No app instance #{app_instance_id}.")
    if access.encryption != _BYOK:
        raise NotByokApp(f"App instance #{app_instance_id} uses vendor-managed keys, not BYOK.")
    note_failure(app_instance_id, access.reason)
    if access.connection_state not in USABLE_STATES:
        cause = str(access.connection_state or "no-connection")
    else:
        cause = "scope-revoked" if access.scope_state else "app-suspended"
    raise AppSuspended(access.reason, cause=cause)


# --- The hot path: no database I/O on a cache hit ---------------------------------------------
#
# A use of a leased key (see ``dataplane.dek_cache``) costs one dict lookup, one clock read and
# the use count; the entry's ``seal`` / ``open`` are bound to its org and app instance (the
# reader checks the app is the caller's). Anything else takes the slow path, which asks the
# guard, finds or unwraps the key, counts the use and grants a new lease.


def encrypt_for(*, app_instance_id: int, record_id: int, plaintext: bytes) -> tuple[int, bytes]:
    """Encrypt one record's bytes under the app's current DEK: ``(data key id, ciphertext)``."""
    entry = writer_of(app_instance_id)
    if entry is not None and entry.uses < entry.max_uses and GUARD.clock() < entry.lease_until:
        entry.uses += 1
    else:
        entry = _writer(app_instance_id)
    return entry.dek_id, entry.seal(record_id, plaintext)


def decrypt_for(*, app_instance_id: int, record_id: int, blob: bytes) -> bytes:
    """Decrypt one record's ciphertext, written by :func:`encrypt_for` for the same record."""
    try:
        entry = entry_for_header(blob[:HEADER_BYTES])
    except (TypeError, ValueError):  # a bytearray or writable view is not hashable
        entry = None
    if (
        entry is not None
        and entry.app_instance_id == app_instance_id
        and entry.uses < entry.max_uses
        and GUARD.clock() < entry.lease_until
    ):
        entry.uses += 1
    else:
        entry = _reader(app_instance_id, blob)
    return entry.open(blob, record_id)


def _writer(app_instance_id: int) -> CachedKey:
    """Slow path of a write: the guard's verdict (maybe a query), then the current DEK from
    the cache, the database and KMS as needed; leased until the verdict is due again."""
    epoch = CACHE.lease_epoch
    until, access = _access_until(app_instance_id)
    entry = CACHE.get_current(app_instance_id)
    if entry is None:
        entry = writing_entry(access)
    CACHE.grant(entry, until=until, epoch=epoch)
    return entry


def _reader(app_instance_id: int, blob: bytes) -> CachedKey:
    """Slow path of a read, like :func:`_writer` for the key the ciphertext names."""
    key_id_of(blob)  # a ciphertext too short to name a key fails first, as ever
    epoch = CACHE.lease_epoch
    until, access = _access_until(app_instance_id)
    _version, dek_id = parse_header(blob)
    if dek_id in access.revoked_dek_ids:  # a period revocation covers the key that sealed it
        note_failure(app_instance_id, PERIOD_REVOKED)
        raise AppSuspended(PERIOD_REVOKED, cause="period-revoked")
    entry = CACHE.get(dek_id)
    if entry is None:
        entry = reading_entry(access, dek_id)
    elif entry.app_instance_id != app_instance_id or entry.org_id != access.org_id:
        raise DecryptionFailed("The ciphertext names a data key of another app.")
    CACHE.grant(entry, until=until, epoch=epoch)
    return entry


# --- Records ------------------------------------------------------------------------------------


def store_record(*, app_instance, kind: str, plaintext: bytes) -> AppRecord:
    """Encrypt and store a new record of a BYOK app instance."""
    if kind not in AppRecord.Kind.values:
        raise ValueError(f"Unknown record kind {kind!r}.")
    app_id = _app_id(app_instance)
    entry = _writer(app_id)  # the slow path: fine beside two queries
    with transaction.atomic():
        # The AAD binds the record id, which exists only once the row does.
        record = AppRecord.objects.create(
            app_instance_id=app_id, kind=kind, data_key_id=entry.dek_id, ciphertext=b""
        )
        record.ciphertext = entry.seal(record.pk, plaintext)
        record.save(update_fields=["ciphertext"])
    return record


def ensure_current_data_key(app_instance) -> DataKey:
    """The app instance's current data key, created now if it has none (provisioning calls
    this so a new app's first write needs no KMS call). Refuses like a write."""
    return DataKey.objects.get(pk=_writer(_app_id(app_instance)).dek_id)


def read_record(*, app_instance, record_id: int) -> bytes:
    """The plaintext of one record of ``app_instance`` (``AppRecord.DoesNotExist`` if absent)."""
    app_id = _app_id(app_instance)
    _access(app_id)  # refuse before touching the row
    row = (
        AppRecord.objects.filter(pk=record_id, app_instance_id=app_id)
        .values_list("data_key_id", "ciphertext")
        .first()
    )
    if row is None:
        raise AppRecord.DoesNotExist(f"No record #{record_id} in this app.")
    return _decrypt_row(app_id, record_id, row[0], row[1])


def decrypt_record(*, record: AppRecord) -> bytes:
    """The plaintext of an already loaded record."""
    _access(record.app_instance_id)
    return _decrypt_row(record.app_instance_id, record.pk, record.data_key_id, record.ciphertext)


def _decrypt_row(app_id: int, record_id: int, data_key_id: int, blob) -> bytes:
    blob = bytes(blob)
    try:
        if parse_header(blob)[1] != data_key_id:
            raise DecryptionFailed("The ciphertext names another data key than its record.")
        plaintext = decrypt_for(app_instance_id=app_id, record_id=record_id, blob=blob)
    except DecryptionFailed as exc:
        note_failure(app_id, f"Record #{record_id} failed to decrypt: {exc}")
        raise
    note_read_ok(app_id)
    return plaintext


def update_record(*, record: AppRecord, plaintext: bytes) -> AppRecord:
    """Replace a record's content; it is re-encrypted under the app's current DEK."""
    dek_id, blob = encrypt_for(
        app_instance_id=record.app_instance_id, record_id=record.pk, plaintext=plaintext
    )
    now = timezone.now()
    AppRecord.objects.filter(pk=record.pk).update(
        ciphertext=blob, data_key_id=dek_id, version=F("version") + 1, updated_at=now
    )
    record.refresh_from_db(fields=["ciphertext", "data_key", "version", "updated_at"])
    return record


def live_read_check(app_instance, *, verify_kms: bool = False) -> tuple[bool, str]:
    """For the BYOK status page: can this app read its data right now? ``(ok, detail)``.

    Re-reads the connection state (no memo), then decrypts the newest record — or, with no
    records yet, round-trips a probe through the current DEK. ``verify_kms`` drops the cached
    key first, so the check also proves KMS still unwraps it (a KMS call, audited).
    """
    app_id = _app_id(app_instance)
    try:
        GUARD.check(app_id, force=True)
        _access(app_id)
        row = (
            AppRecord.objects.filter(app_instance_id=app_id)
            .order_by("-id")
            .values_list("pk", "data_key_id", "ciphertext", "kind")
            .first()
        )
        started = time.perf_counter()
        if row is None:
            if verify_kms:
                CACHE.discard_current(app_id)
            probe = b"byok-live-read-check"
            _dek, blob = encrypt_for(app_instance_id=app_id, record_id=0, plaintext=probe)
            if decrypt_for(app_instance_id=app_id, record_id=0, blob=blob) != probe:
                return False, "A round trip through the data key returned other bytes."
            ms = (time.perf_counter() - started) * 1000
            return True, f"No records yet; a round trip through the data key took {ms:.0f} ms."
        record_id, dek_id, blob, kind = row
        if verify_kms:
            CACHE.discard(dek_id)
        _decrypt_row(app_id, record_id, dek_id, blob)
        ms = (time.perf_counter() - started) * 1000
        label = AppRecord.Kind(kind).label.lower() if kind in AppRecord.Kind.values else kind
        return True, f"Read {label} #{record_id} in {ms:.0f} ms."
    except AppSuspended as exc:
        return False, exc.reason
    except DecryptionFailed as exc:
        return False, f"The newest record could not be decrypted: {exc}"
    except (AppInstance.DoesNotExist, NotByokApp) as exc:
        return False, str(exc)
