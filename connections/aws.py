"""The only module that talks to AWS (boto3). Everything else calls these small functions.

Every botocore error is turned into one named cause (``KeyDisabled``, ``AccessDenied``,
``Throttled`` …) so callers branch on meaning, never on error strings. Retries, timeouts and
the endpoint (moto locally) are configured here and nowhere else.

Each call made with a customer's role can be reported to an ``on_call`` callback as a
:class:`KmsCall` (operation, region, key, encryption context, error): that is how key-usage
audit events are written without this module knowing about the audit app. Plaintext and
ciphertext never appear in a ``KmsCall``. Every KMS and STS call is also counted, with its
duration and outcome (``ok`` or the named cause), in ``core.metrics`` for ``/metrics``.

``CustomerSession.list_objects``/``get_object`` read (never write) the customer's CloudTrail
bucket for audit ingestion, in the same assumed-role session.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import boto3
import botocore.config
import botocore.exceptions
import botocore.session
from django.conf import settings

from connections.aws_errors import (  # noqa: F401 — re-exported: callers use aws.<Cause>
    REVOKING_CAUSES,
    AccessDenied,
    AwsError,
    InvalidCiphertext,
    InvalidRequest,
    KeyDisabled,
    KeyInvalidState,
    KeyNotFound,
    ObjectNotFound,
    ObjectTooLarge,
    RoleUnavailable,
    Throttled,
    Unreachable,
    classify,
)
from core import metrics

# --- Clients ----------------------------------------------------------------------------

#: botocore event hooks ``(event_name, handler)`` for every client this module creates
#: (``before-call``, ``before-send`` and ``after-call`` events, e.g.
#: ``"before-send.kms.Decrypt"``). Tests use it to inject throttling, timeouts or AccessDenied
#: at the botocore layer.
EVENT_HOOKS: list[tuple[str, Callable]] = []


def _client_config() -> botocore.config.Config:
    return botocore.config.Config(
        connect_timeout=settings.AWS_CONNECT_TIMEOUT_S,
        read_timeout=settings.AWS_READ_TIMEOUT_S,
        # total_max_attempts counts the first try too, like AWS_MAX_ATTEMPTS in the AWS SDKs
        # ("max_attempts" here would mean retries, i.e. one attempt more than configured).
        retries={"total_max_attempts": settings.AWS_MAX_ATTEMPTS, "mode": "standard"},
    )


_LOADER_LOCK = threading.Lock()
_LOADER = None


def _shared_loader():
    """One botocore data loader per process: service models are parsed once, not per client."""
    global _LOADER
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = botocore.session.get_session().get_component("data_loader")
        return _LOADER


def _client(service: str, region: str, credentials: dict | None = None):
    core = botocore.session.get_session()
    core.register_component("data_loader", _shared_loader())
    session = boto3.session.Session(botocore_session=core, **(credentials or {}))
    client = session.client(
        service,
        region_name=region,
        endpoint_url=settings.AWS_ENDPOINT_URL,
        config=_client_config(),
    )
    # Registered per service: botocore calls more specific handlers first, so these run
    # before generic ones such as moto's in-process responder.
    service_id = client.meta.service_model.service_id.hyphenize()
    for stage in _HOOK_STAGES:
        client.meta.events.register(f"{stage}.{service_id}", _dispatch_hooks)
    client.meta.events.register(f"needs-retry.{service_id}", _note_attempt)
    return client


# --- Every attempt AWS answered, retries included --------------------------------------------
# botocore retries a throttled or failed attempt under a new request ID, and CloudTrail logs
# each attempt that reached the service. The caller's report names the last one; the earlier
# ones are reported too, so the customer's trail never shows a vendor call the portal has no
# record of (integrations.reconcile would flag it as unexplained).
_ATTEMPTS = threading.local()


def _note_attempt(response=None, **kwargs) -> None:
    attempts = getattr(_ATTEMPTS, "log", None)
    if attempts is None or not isinstance(response, tuple) or len(response) < 2:
        return None  # not inside a reported call, or no answer (a timeout): nothing to record
    parsed = response[1] if isinstance(response[1], dict) else {}
    request_id = (parsed.get("ResponseMetadata") or {}).get("RequestId") or ""
    if request_id:
        attempts.append((request_id, (parsed.get("Error") or {}).get("Code", "")))
    return None


def _start_attempts() -> None:
    _ATTEMPTS.log = []


def _earlier_attempts(final_request_id: str) -> list[tuple[str, str]]:
    """The attempts answered before the final one (whose request ID the caller reports)."""
    attempts, _ATTEMPTS.log = getattr(_ATTEMPTS, "log", None) or [], None
    return [(rid, code) for rid, code in attempts if rid != final_request_id]


# Hooks are looked up when an event fires, so they reach clients created (and cached) earlier.
_HOOK_STAGES = ("before-call", "before-send", "after-call")


def _dispatch_hooks(event_name: str, **kwargs):
    for name, handler in EVENT_HOOKS:
        if event_name == name or event_name.startswith(name + "."):
            response = handler(event_name=event_name, **kwargs)
            if response is not None:
                return response
    return None


@dataclass(frozen=True)
class KmsCall:
    """What one call did, for the audit log: never plaintext, ciphertext or key bytes."""

    operation: str
    service: str
    region: str
    key_arn: str
    encryption_context: dict
    role_arn: str
    account_id: str
    request_id: str
    error: AwsError | None = None
    request_parameters: dict = field(default_factory=dict)
    response_elements: dict = field(default_factory=dict)


@dataclass(frozen=True)
class KeyDescription:
    key_id: str
    arn: str
    region: str
    enabled: bool
    state: str
    spec: str
    usage: str
    multi_region: bool

    @property
    def is_symmetric_encrypt_decrypt(self) -> bool:
        return self.spec == "SYMMETRIC_DEFAULT" and self.usage == "ENCRYPT_DECRYPT"


def _request_id(response: dict) -> str:
    return response.get("ResponseMetadata", {}).get("RequestId", "") or str(uuid.uuid4())


def _request_id_or_empty(response: dict) -> str:
    return response.get("ResponseMetadata", {}).get("RequestId", "")


def _with_request_id(request_id: str) -> dict:
    return {"ResponseMetadata": {"RequestId": request_id}}


def _error_response(exc: Exception) -> dict:
    """A refused call's parsed error response: its request ID is the one CloudTrail logs, so
    the customer's trail confirms the refused call too (``integrations.reconcile``)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return {}
    return {"ResponseMetadata": response.get("ResponseMetadata") or {}}


class CustomerSession:
    """Calls made as the customer's role. Created by :func:`assume_customer_role`."""

    def __init__(self, *, role_arn, account_id, credentials, expires_at, on_call=None):
        self.role_arn = role_arn
        self.account_id = account_id
        self._credentials = credentials
        self.expires_at = expires_at
        self.on_call = on_call
        self._clients: dict[str, object] = {}
        self._lock = threading.Lock()

    def _kms(self, region: str):
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = _client("kms", region, self._credentials)
            return client

    def _call(self, region: str, operation: str, *, key: str, context: dict | None, **params):
        method = getattr(self._kms(region), _snake(operation))
        api_params = dict(params)
        if key:
            api_params["KeyId"] = key
        if context is not None:
            api_params["EncryptionContext"] = context
        error = None
        response: dict = {}
        _start_attempts()
        started = time.perf_counter()
        try:
            response = method(**api_params)
            return response
        except Exception as exc:  # noqa: BLE001 — classified and re-raised below
            response = _error_response(exc)
            error = classify(exc, region=region, operation=operation)
            raise error from exc
        finally:
            earlier = _earlier_attempts(_request_id_or_empty(response))
            metrics.aws_call_done("kms", operation, error and error.cause, started, len(earlier))
            for request_id, code in earlier:
                retried = AwsError(
                    f"AWS answered {code or 'an error'}; retried.", region=region, code=code
                )
                self._report(
                    operation, region, key, _with_request_id(request_id), context, retried, params
                )
            self._report(operation, region, key, response, context, error, params)

    def _report(self, operation, region, key, response, context, error, params):
        if self.on_call is None:
            return
        key_arn = response.get("KeyId") or response.get("KeyMetadata", {}).get("Arn") or key
        self.on_call(
            KmsCall(
                operation=operation,
                service="kms.amazonaws.com",
                region=region,
                key_arn=key_arn or "",
                encryption_context=dict(context or {}),
                role_arn=self.role_arn,
                account_id=self.account_id,
                request_id=_request_id(response),
                error=error,
                request_parameters={
                    k: v
                    for k, v in params.items()
                    if k in ("KeySpec", "AliasName", "NumberOfBytes")
                },
            )
        )

    # -- KMS operations, each one call --

    def describe_key(self, region: str, key: str) -> KeyDescription:
        meta = self._call(region, "DescribeKey", key=key, context=None)["KeyMetadata"]
        return KeyDescription(
            key_id=meta["KeyId"],
            arn=meta["Arn"],
            region=meta["Arn"].split(":")[3],
            enabled=bool(meta.get("Enabled")),
            state=meta.get("KeyState", ""),
            spec=meta.get("KeySpec") or meta.get("CustomerMasterKeySpec", ""),
            usage=meta.get("KeyUsage", ""),
            multi_region=bool(meta.get("MultiRegion")),
        )

    def generate_data_key(self, region: str, key: str, context: dict) -> tuple[bytes, bytes, str]:
        """A new 256-bit data key: (plaintext, wrapped blob, key ARN)."""
        r = self._call(region, "GenerateDataKey", key=key, context=context, KeySpec="AES_256")
        return r["Plaintext"], r["CiphertextBlob"], r["KeyId"]

    def encrypt(self, region: str, key: str, plaintext: bytes, context: dict) -> bytes:
        return self._call(region, "Encrypt", key=key, context=context, Plaintext=plaintext)[
            "CiphertextBlob"
        ]

    def decrypt(self, region: str, key: str, blob: bytes, context: dict) -> bytes:
        return self._call(region, "Decrypt", key=key, context=context, CiphertextBlob=blob)[
            "Plaintext"
        ]

    def re_encrypt(
        self, region: str, *, blob: bytes, source_key: str, dest_key: str, context: dict
    ) -> bytes:
        r = self._call(
            region,
            "ReEncrypt",
            key="",
            context=None,
            CiphertextBlob=blob,
            SourceKeyId=source_key,
            DestinationKeyId=dest_key,
            SourceEncryptionContext=context,
            DestinationEncryptionContext=context,
        )
        return r["CiphertextBlob"]

    def key_arn_for_alias(self, region: str, alias: str) -> str:
        """The ARN of the key an alias points to (``DescribeKey`` accepts alias names)."""
        return self.describe_key(region, alias).arn

    # -- S3, read-only: the customer's CloudTrail bucket (audit ingestion) --

    def _s3(self, region: str):
        with self._lock:
            client = self._clients.get(f"s3:{region}")
            if client is None:
                client = self._clients[f"s3:{region}"] = _client("s3", region, self._credentials)
            return client

    def list_objects(self, region: str, bucket: str, prefix: str = "") -> Iterator[S3Object]:
        """Every object under ``prefix``, in key order (``ListObjectsV2``, paginated)."""
        paginator = self._s3(region).get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents") or []:
                    yield S3Object(
                        key=item["Key"],
                        etag=(item.get("ETag") or "").strip('"'),
                        size=int(item.get("Size") or 0),
                        last_modified=item.get("LastModified"),
                    )
        except Exception as exc:  # noqa: BLE001 — classified and re-raised
            raise _classify_s3(exc, region=region, operation="ListObjectsV2") from exc

    def get_object(self, region: str, bucket: str, key: str, *, max_bytes: int) -> bytes:
        """The object's bytes; :class:`ObjectTooLarge` (nothing read) above ``max_bytes``."""
        try:
            response = self._s3(region).get_object(Bucket=bucket, Key=key)
            length = int(response.get("ContentLength") or 0)
            if length > max_bytes:
                response["Body"].close()
                raise ObjectTooLarge(
                    f"{key} is {length} bytes; the limit is {max_bytes}.",
                    region=region,
                    operation="GetObject",
                )
            with response["Body"] as body:
                data = body.read(max_bytes + 1)
        except AwsError:
            raise
        except Exception as exc:  # noqa: BLE001 — classified and re-raised
            raise _classify_s3(exc, region=region, operation="GetObject") from exc
        if len(data) > max_bytes:
            raise ObjectTooLarge(
                f"{key} is larger than {max_bytes} bytes.", region=region, operation="GetObject"
            )
        return data


@dataclass(frozen=True)
class S3Object:
    key: str
    etag: str
    size: int
    last_modified: object = None


_S3_NOT_FOUND = frozenset({"NoSuchBucket", "NoSuchKey", "404", "NotFound"})


def _classify_s3(exc: Exception, *, region: str, operation: str) -> AwsError:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _S3_NOT_FOUND:
            return ObjectNotFound(
                error.get("Message") or code, region=region, code=code, operation=operation
            )
        if code == "403":
            return AccessDenied("Access denied.", region=region, code=code, operation=operation)
    return classify(exc, region=region, operation=operation)


def _snake(operation: str) -> str:
    out = []
    for i, ch in enumerate(operation):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


# --- Assuming the customer's role ---------------------------------------------------------

_SESSION_CACHE: dict[tuple[str, str], CustomerSession] = {}
_SESSION_LOCK = threading.Lock()
# Refresh assumed-role credentials well before STS's one-hour expiry.
SESSION_MAX_AGE_S = 45 * 60


def assume_customer_role(
    *,
    role_arn: str,
    external_id: str,
    session_name: str = "byok-portal",
    on_call=None,
    cached: bool = True,
) -> CustomerSession:
    """``sts:AssumeRole`` into the customer's account with the org's ExternalId."""
    cache_key = (role_arn, external_id)
    now = time.monotonic()
    if cached:
        with _SESSION_LOCK:
            session = _SESSION_CACHE.get(cache_key)
        if session is not None and session.expires_at > now:
            session.on_call = on_call
            return session
    account_id = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
    sts = _client("sts", settings.AWS_STS_REGION)
    error = None
    response: dict = {}
    _start_attempts()
    started = time.perf_counter()
    try:
        response = sts.assume_role(
            RoleArn=role_arn,
            RoleSessionName=session_name[:64],
            ExternalId=external_id,
            DurationSeconds=3600,
        )
    except Exception as exc:  # noqa: BLE001
        response = _error_response(exc)
        error = classify(exc, region=settings.AWS_STS_REGION, operation="AssumeRole")
        raise error from exc
    finally:
        earlier = _earlier_attempts(_request_id_or_empty(response))
        metrics.aws_call_done("sts", "AssumeRole", error and error.cause, started, len(earlier))
        if on_call is not None:
            attempts = [
                (rid, AwsError(f"AWS answered {code or 'an error'}; retried.", code=code))
                for rid, code in earlier
            ] + [(_request_id(response), error)]
            for request_id, attempt_error in attempts:
                on_call(
                    KmsCall(
                        operation="AssumeRole",
                        service="sts.amazonaws.com",
                        region=settings.AWS_STS_REGION,
                        key_arn="",
                        encryption_context={},
                        role_arn=role_arn,
                        account_id=account_id,
                        request_id=request_id,
                        error=attempt_error,
                        request_parameters={
                            "roleArn": role_arn,
                            "roleSessionName": session_name[:64],
                        },
                    )
                )
    creds = response["Credentials"]
    session = CustomerSession(
        role_arn=role_arn,
        account_id=account_id,
        credentials={
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        },
        expires_at=now + SESSION_MAX_AGE_S,
        on_call=on_call,
    )
    if cached:
        with _SESSION_LOCK:
            _SESSION_CACHE[cache_key] = session
    return session


def forget_sessions() -> None:
    """Drop cached assumed-role sessions (after a revocation, and between tests)."""
    with _SESSION_LOCK:
        _SESSION_CACHE.clear()


# --- The customer's side, as the onboarding kit creates it (demo and tests only) ------------


def customer_admin_client(service: str, region: str, account_id: str):
    """A client acting as an administrator *inside the customer's account*.

    Only for the local moto endpoint (demo data and tests): it plays the customer creating
    the role and keys with the onboarding kit, or disabling a key to revoke access.
    """
    sts = _client("sts", settings.AWS_STS_REGION)
    creds = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole",
        RoleSessionName="customer-admin",
    )["Credentials"]
    return _client(
        service,
        region,
        {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        },
    )
