"""Cache misses of the data plane: data keys from the database and AWS KMS.

A write's current data key is created (``GenerateDataKey`` in the primary region, ``Encrypt``
in the others) or unwrapped; a read's key is unwrapped (``Decrypt``, primary region first,
falling back on the others when it is throttled or unreachable). A revoking AWS error revokes
the connection at once (``connections.services.revoke_after_aws_refusal``). See
``dataplane.records`` for the whole story.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from connections import aws
from connections.key_usage import recorder_for
from connections.models import ByokConnection, DataKey, DataKeyWrapping, RegionalKey
from connections.services import (
    Scope,
    revoke_after_aws_refusal,
    revoke_scope_after_customer_denial,
)
from core.locations import get_location
from dataplane.dek_cache import CACHE, GUARD, AppAccess, CachedKey
from dataplane.envelope import DataKeyCipher, DecryptionFailed
from dataplane.errors import AppSuspended, KeysUnavailable
from dataplane.health import note_failure

log = logging.getLogger(__name__)

#: ``DescribeKey`` states other than Enabled, and the named cause each one means.
_REVOKED_KEY_STATE_ERRORS = {"Disabled": aws.KeyDisabled}
#: KMS operations that carry the app's encryption context (a key policy may deny one context).
_CONTEXT_OPERATIONS = frozenset({"Decrypt", "Encrypt", "GenerateDataKey", "ReEncrypt"})

_STRIPES = [threading.Lock() for _ in range(64)]


@contextmanager
def _single_flight(key):
    """Threads of one process missing the same key wait for one KMS round trip, not N."""
    with _STRIPES[hash(key) % len(_STRIPES)]:
        yield


def writing_entry(access: AppAccess) -> CachedKey:
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


def reading_entry(access: AppAccess, dek_id: int) -> CachedKey:
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
    """A revoking AWS error: purge, revoke the connection now, and say so. An access denial
    of a call carrying the app's encryption context (the key itself was described fine) is a
    customer-side ``Deny`` on this app's context: only the app's scope is revoked."""
    if isinstance(err, aws.AccessDenied) and err.operation in _CONTEXT_OPERATIONS:
        return _scope_denied_by_aws(access, err, region)
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
    note_failure(access.app_instance_id, reason, force=True)
    return AppSuspended(reason, cause=err.cause)


def _scope_denied_by_aws(access: AppAccess, err: aws.AwsError, region: str) -> AppSuspended:
    CACHE.purge_app(access.app_instance_id)
    GUARD.forget_app(access.app_instance_id)
    detail = (
        f"AWS denies {err.operation} with site={access.site_name}, app={access.app} in {region} "
        f"({err.code or err.cause})"
    )
    if access.connection_id is not None:
        try:
            revoke_scope_after_customer_denial(
                connection_id=access.connection_id,
                scope=Scope.app(access.app_instance_id),
                detail=detail,
            )
        except Exception:  # noqa: BLE001 — the refusal below stands whatever happens here
            log.exception("Revoking app %s after a denial failed", access.app_instance_id)
    reason = (
        f"Your key policy denies this app's encryption context in {region}, so this app's key "
        "access was revoked; your other apps keep working."
    )
    note_failure(access.app_instance_id, reason, force=True)
    return AppSuspended(reason, cause="scope-revoked")


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
        note_failure(access.app_instance_id, reason)
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
        note_failure(access.app_instance_id, reason)
        raise DecryptionFailed(reason)
    where = ", ".join(sorted({f.region or "?" for f in failures}))
    causes = ", ".join(sorted({f.cause for f in failures}))
    if any(f.transient for f in failures):
        reason = f"AWS KMS did not answer in {where} ({causes}); app data is readable again soon."
        note_failure(access.app_instance_id, reason)
        raise KeysUnavailable(reason, cause=failures[-1].cause)
    reason = f"AWS KMS would not unwrap this app's data key in {where} ({causes})."
    note_failure(access.app_instance_id, reason)
    raise AppSuspended(reason, cause=failures[-1].cause)
