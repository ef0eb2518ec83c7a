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

import logging
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from connections import aws
from connections.key_usage import recorder_for
from connections.lifecycle import USABLE_STATES
from connections.models import ByokConnection, DataKey, DataKeyWrapping, RegionalKey
from connections.services import revoke_after_aws_refusal
from core.locations import get_location
from dataplane.dek_cache import CACHE, GUARD, AppAccess, CachedKey, entry_for_header, writer_of
from dataplane.envelope import (
    HEADER_BYTES,
    DataKeyCipher,
    DecryptionFailed,
    key_id_of,
    parse_header,
)
from dataplane.models import AppDataHealth, AppRecord
from orgs.models import AppInstance

log = logging.getLogger(__name__)

#: At most one AppDataHealth write per app instance and outcome per process this often.
HEALTH_WRITE_INTERVAL_S = 5.0
#: ``DescribeKey`` states other than Enabled, and the named cause each one means.
_REVOKED_KEY_STATE_ERRORS = {"Disabled": aws.KeyDisabled}

__all__ = [
    "AppSuspended",
    "DecryptionFailed",
    "KeysUnavailable",
    "NotByokApp",
    "decrypt_for",
    "decrypt_record",
    "encrypt_for",
    "ensure_current_data_key",
    "live_read_check",
    "read_record",
    "store_record",
    "update_record",
]


class AppSuspended(Exception):
    """The app's data cannot be used now; ``reason`` is written for the customer.

    ``cause`` is a stable machine name: the connection state (``revoked`` …),
    ``app-suspended``, or an AWS cause (``key-disabled`` …). ``transient`` is true when
    retrying later may succeed without anyone acting (AWS unreachable or throttling).
    """

    transient = False

    def __init__(self, reason: str, *, cause: str = "suspended"):
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class KeysUnavailable(AppSuspended):
    """AWS KMS did not answer in any region of the location: not a revocation; retry later."""

    transient = True


class NotByokApp(ValueError):
    """The app instance uses vendor-managed keys: its data does not go through this module."""


# --- Access -----------------------------------------------------------------------------------


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
    _note_failure(app_instance_id, access.reason)
    cause = (
        "app-suspended"
        if access.connection_state in USABLE_STATES
        else str(access.connection_state or "no-connection")
    )
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
        entry = _writing_entry(access)
    CACHE.grant(entry, until=until, epoch=epoch)
    return entry


def _reader(app_instance_id: int, blob: bytes) -> CachedKey:
    """Slow path of a read, like :func:`_writer` for the key the ciphertext names."""
    key_id_of(blob)  # a ciphertext too short to name a key fails first, as ever
    epoch = CACHE.lease_epoch
    until, access = _access_until(app_instance_id)
    _version, dek_id = parse_header(blob)
    entry = CACHE.get(dek_id)
    if entry is None:
        entry = _reading_entry(access, dek_id)
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
        _note_failure(app_id, f"Record #{record_id} failed to decrypt: {exc}")
        raise
    _note_read_ok(app_id)
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


# --- Cache misses: the database and KMS ------------------------------------------------------

_STRIPES = [threading.Lock() for _ in range(64)]


@contextmanager
def _single_flight(key):
    """Threads of one process missing the same key wait for one KMS round trip, not N."""
    with _STRIPES[hash(key) % len(_STRIPES)]:
        yield


def _writing_entry(access: AppAccess) -> CachedKey:
    app_id = access.app_instance_id
    with _single_flight(("app", app_id)):
        hit = CACHE.get_current(app_id)
        if hit is not None:
            return hit
        current = DataKey.objects.filter(
            app_instance_id=app_id, is_current=True, destroyed_at__isnull=True
        ).first()
        cipher = None
        if current is None or _due_for_rotation(current):
            try:
                cipher = _create_data_key(access, replacing=current)
            except KeysUnavailable:
                if current is None:
                    raise
                log.warning("Data key rotation of app %s postponed: KMS unavailable.", app_id)
            if cipher is None:  # lost a race with another process, or rotation postponed
                current = DataKey.objects.filter(app_instance_id=app_id, is_current=True).first()
        if cipher is None:
            if current is None or current.destroyed_at is not None:
                raise AppSuspended(
                    "This app's data keys were destroyed; its data is unrecoverable.",
                    cause="keys-destroyed",
                )
            hit = CACHE.get(current.pk)
            if hit is not None:  # cached for reading already: keep its age and use count
                CACHE.mark_current(app_id, current.pk)
                return hit
            cipher = _unwrap(access, current)
        return CACHE.put(cipher, org_id=access.org_id, app_instance_id=app_id, current=True, uses=1)


def _due_for_rotation(data_key: DataKey) -> bool:
    max_age = settings.DEK_ROTATE_AFTER_S
    return bool(max_age) and timezone.now() - data_key.created_at > timedelta(seconds=max_age)


def _reading_entry(access: AppAccess, dek_id: int) -> CachedKey:
    with _single_flight(("dek", dek_id)):
        hit = CACHE.get(dek_id)
        if hit is not None and hit.app_instance_id == access.app_instance_id:
            return hit
        data_key = DataKey.objects.filter(pk=dek_id).first()
        if data_key is None or data_key.app_instance_id != access.app_instance_id:
            raise DecryptionFailed("The ciphertext names a data key of another app.")
        if data_key.destroyed_at is not None:
            raise AppSuspended(
                "This record's data key was destroyed; its data is unrecoverable.",
                cause="keys-destroyed",
            )
        cipher = _unwrap(access, data_key)
        return CACHE.put(
            cipher, org_id=access.org_id, app_instance_id=access.app_instance_id, uses=1
        )


def _connection(access: AppAccess) -> ByokConnection:
    if access.connection_id is None:
        raise AppSuspended("This app has no BYOK key connection.", cause="no-connection")
    return ByokConnection.objects.select_related("organization").get(pk=access.connection_id)


def _session(connection: ByokConnection) -> aws.CustomerSession:
    """The customer's role, every call of it audited as key usage of the org."""
    return aws.assume_customer_role(
        role_arn=connection.role_arn,
        external_id=connection.external_id,
        on_call=recorder_for(connection.organization),
    )


def _require_enabled(session: aws.CustomerSession, region: str, key_arn: str) -> None:
    """moto lets a disabled key work: ask ``DescribeKey`` and refuse like AWS would."""
    described = session.describe_key(region, key_arn)
    if described.state != "Enabled":
        err_cls = _REVOKED_KEY_STATE_ERRORS.get(described.state, aws.KeyInvalidState)
        raise err_cls(
            f"The key is {described.state}.",
            region=region,
            code=f"KeyState:{described.state}",
            operation="DescribeKey",
        )


def _refused_by_aws(access: AppAccess, err: aws.AwsError, region: str) -> AppSuspended:
    """A revoking AWS error: purge, revoke the connection now, and say so."""
    CACHE.purge_org(access.org_id)
    GUARD.forget_org(access.org_id)
    if access.connection_id is not None:
        try:
            revoke_after_aws_refusal(
                connection_id=access.connection_id,
                region=region,
                cause=err.cause,
                detail=f"{err.code or err.cause}: {err.message}"[:300],
            )
        except Exception:  # noqa: BLE001 — the refusal below stands whatever happens here
            log.exception(
                "Revoking connection %s after an AWS refusal failed", access.connection_id
            )
    reason = (
        f"AWS refused your key in {region} ({err.cause}), so key access was revoked. "
        "App data stays unreadable until access is restored."
    )
    _note_failure(access.app_instance_id, reason, force=True)
    return AppSuspended(reason, cause=err.cause)


def _create_data_key(access: AppAccess, *, replacing: DataKey | None) -> DataKeyCipher | None:
    """A new current DEK for the app, wrapped in every region; ``None`` if we lost a race."""
    connection = _connection(access)
    location = get_location(connection.location)
    keys = {k.region: k for k in RegionalKey.objects.filter(connection=connection, is_current=True)}
    missing = [r for r in location.regions if r not in keys]
    if missing:
        raise AppSuspended(
            f"No current key is registered for {', '.join(missing)}.", cause="misconfigured"
        )
    context = access.encryption_context
    primary = location.primary_region
    region = primary
    try:
        session = _session(connection)
        _require_enabled(session, primary, keys[primary].key_arn)
        plaintext, blob, _arn = session.generate_data_key(primary, keys[primary].key_arn, context)
        wrapped = [(keys[primary], blob)]
        for region in location.regions[1:]:
            _require_enabled(session, region, keys[region].key_arn)
            wrapped.append(
                (keys[region], session.encrypt(region, keys[region].key_arn, plaintext, context))
            )
    except aws.REVOKING_CAUSES as err:
        raise _refused_by_aws(access, err, err.region or region) from err
    except aws.AwsError as err:
        reason = (
            f"AWS KMS in {err.region or region} did not create a data key ({err.cause}); "
            "try again shortly."
        )
        _note_failure(access.app_instance_id, reason)
        raise KeysUnavailable(reason, cause=err.cause) from err
    try:
        with transaction.atomic():
            if replacing is not None:
                DataKey.objects.filter(pk=replacing.pk, is_current=True).update(is_current=False)
            data_key = DataKey.objects.create(
                app_instance_id=access.app_instance_id, encryption_context=context
            )
            DataKeyWrapping.objects.bulk_create(
                DataKeyWrapping(
                    data_key=data_key, regional_key=rk, region=rk.region, blob=wrapped_blob
                )
                for rk, wrapped_blob in wrapped
            )
    except IntegrityError:
        return None  # another process made the app's current DEK first: use that one
    cipher = DataKeyCipher(dek_id=data_key.pk, dek=plaintext)
    del plaintext
    if replacing is not None:
        CACHE.forget_current(access.app_instance_id)
    return cipher


def _unwrap(access: AppAccess, data_key: DataKey) -> DataKeyCipher:
    """``Decrypt`` a stored DEK: primary region first, then the others if it fails without
    refusing (throttled, unreachable …). A refusal anywhere revokes at once."""
    connection = _connection(access)
    order = {region: i for i, region in enumerate(get_location(connection.location).regions)}
    wrappings = sorted(
        DataKeyWrapping.objects.filter(data_key=data_key, retired_at__isnull=True).select_related(
            "regional_key"
        ),
        key=lambda w: (order.get(w.region, len(order)), -w.regional_key.generation),
    )
    if not wrappings:
        raise AppSuspended(
            "This data key has no usable wrapped copy; its data is unrecoverable.",
            cause="keys-destroyed",
        )
    failures: list[aws.AwsError] = []
    region = wrappings[0].region
    try:
        session = _session(connection)
    except aws.REVOKING_CAUSES as err:
        raise _refused_by_aws(access, err, region) from err
    except aws.AwsError as err:
        failures.append(err)
        session = None
    for wrapping in wrappings if session is not None else ():
        region, key_arn = wrapping.region, wrapping.regional_key.key_arn
        try:
            _require_enabled(session, region, key_arn)
            plaintext = session.decrypt(
                region, key_arn, bytes(wrapping.blob), data_key.encryption_context
            )
        except aws.REVOKING_CAUSES as err:
            raise _refused_by_aws(access, err, region) from err
        except aws.AwsError as err:
            log.warning(
                "Unwrapping data key %s in %s failed (%s); trying the next region.",
                data_key.pk,
                region,
                err.cause,
            )
            failures.append(err)
            continue
        cipher = DataKeyCipher(dek_id=data_key.pk, dek=plaintext)
        del plaintext
        return cipher
    if failures and all(isinstance(f, aws.InvalidCiphertext) for f in failures):
        reason = (
            f"Data key #{data_key.pk} does not unwrap with its encryption context in any region."
        )
        _note_failure(access.app_instance_id, reason)
        raise DecryptionFailed(reason)
    where = ", ".join(sorted({f.region or "?" for f in failures}))
    causes = ", ".join(sorted({f.cause for f in failures}))
    if any(f.transient for f in failures):
        reason = f"AWS KMS did not answer in {where} ({causes}); app data is readable again soon."
        _note_failure(access.app_instance_id, reason)
        raise KeysUnavailable(reason, cause=failures[-1].cause)
    reason = f"AWS KMS would not unwrap this app's data key in {where} ({causes})."
    _note_failure(access.app_instance_id, reason)
    raise AppSuspended(reason, cause=failures[-1].cause)


# --- AppDataHealth, written at most every few seconds per app and process ----------------------

_health_written: dict[tuple[int, str], float] = {}


def _throttled(app_id: int, outcome: str, force: bool = False) -> bool:
    now = GUARD.clock()
    last = _health_written.get((app_id, outcome))
    if not force and last is not None and now - last < HEALTH_WRITE_INTERVAL_S:
        return True
    _health_written[(app_id, outcome)] = now
    return False


def write_health(app_id: int, **fields) -> None:
    """Update (or create) the app's health row; best effort: it never breaks a read."""
    try:
        with transaction.atomic():
            if not AppDataHealth.objects.filter(app_instance_id=app_id).update(**fields):
                AppDataHealth.objects.get_or_create(app_instance_id=app_id, defaults=fields)
    except DatabaseError:  # health is best effort: it never breaks a read
        log.warning("Could not record data health of app %s", app_id, exc_info=True)


def _note_read_ok(app_id: int) -> None:
    if not _throttled(app_id, "ok"):
        write_health(app_id, last_read_at=timezone.now())


def _note_failure(app_id: int, reason: str, *, force: bool = False) -> None:
    if not _throttled(app_id, "failure", force):
        write_health(app_id, last_failure_at=timezone.now(), last_failure=reason[:300])


def forget_health_throttle() -> None:
    """Tests: let the next read or failure write its AppDataHealth row again."""
    _health_written.clear()
