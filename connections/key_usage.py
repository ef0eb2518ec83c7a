"""Key-usage audit events: one CloudTrail-format record per AWS call made with a customer's role.

``keys/aws.py`` reports every call as a :class:`connections.aws.KmsCall`; :func:`recorder_for` turns
those reports into audit events of the organization. Preflight, the data plane and the health
monitor all pass ``on_call=recorder_for(org)``, so every use of the customer's keys lands in the
customer's audit log with the encryption context — and never plaintext, ciphertext or key bytes.

The records follow what AWS CloudTrail writes for the same calls in the customer's account:
KMS calls are made by the assumed-role session (``userIdentity.type = AssumedRole``), the
``AssumeRole`` call itself by the vendor's principal; every KMS and STS call is a management
event, and KMS's cryptographic operations are read-only events, as CloudTrail classifies them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import transaction

from audit.models import AuditEvent
from audit.services import append_events, record_event
from connections import aws

#: The session name ``connections.aws.assume_customer_role`` uses unless told otherwise.
DEFAULT_SESSION_NAME = "byok-portal"

#: Operations CloudTrail records with ``readOnly: true``. KMS's cryptographic operations are
#: read-only events in CloudTrail (they change no resource); only the key-management
#: operations (CreateKey, DisableKey, ScheduleKeyDeletion …) are not.
READ_ONLY_OPERATIONS = frozenset(
    {
        "AssumeRole",
        "DescribeKey",
        "ListAliases",
        "ListKeys",
        "ListGrants",
        "ListKeyPolicies",
        "ListResourceTags",
        "GetKeyPolicy",
        "GetKeyRotationStatus",
        "GetPublicKey",
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateRandom",
        "Sign",
        "Verify",
        "GenerateMac",
        "VerifyMac",
    }
)

#: Operations that take an encryption context: their records always show it.
CONTEXT_OPERATIONS = frozenset(
    {
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
    }
)

# Parameter names that carry key material or data. Dropped whatever the caller reports.
_SECRET_PARAMETERS = frozenset(
    {
        "plaintext",
        "ciphertextblob",
        "ciphertextforrecipient",
        "privatekeyplaintext",
        "privatekeyciphertextblob",
        "message",
        "signature",
        "mac",
        "secretaccesskey",
        "sessiontoken",
        "credentials",
    }
)


def recorder_for(org) -> Callable[[aws.KmsCall], None]:
    """An ``on_call`` callback for ``connections.aws``: each call becomes a key-usage event,
    committed on its own as soon as AWS has answered.

    The call really happened in the customer's account whatever the caller does next, so its
    record must not share the fate of the caller's transaction: a rollback would erase the
    record of a call CloudTrail still shows (and the reconciliation would flag it as a call
    the vendor cannot explain). ``durable=True`` makes that a rule: calling AWS with this
    recorder inside a transaction fails loudly instead of silently tying the record to it.
    The re-encryption job, which batches its calls, writes them with ``record_key_usage`` in a
    transaction of their own before its checkpoint (``reencryption.job.audit``).
    """

    def record(call: aws.KmsCall) -> None:
        with transaction.atomic(durable=True):
            record_key_usage(org=org, call=call)

    return record


def record_key_usage(*, org, call: aws.KmsCall) -> AuditEvent:
    """Write one key-usage audit event for ``call`` in ``org``'s chain."""
    return record_event(org=org, **_event_parts(call))


def record_key_usages(*, org, calls: Iterable[aws.KmsCall]) -> list[AuditEvent]:
    """Write the key-usage events of ``calls``, in order, in ``org``'s chain, inside the
    caller's transaction: the same events as :func:`record_key_usage` once per call, appended
    in one go (``audit.services.append_events``)."""
    return append_events(org=org, events=[_event_parts(call) for call in calls])


def _event_parts(call: aws.KmsCall) -> dict:
    """``record_event``'s arguments (but ``org``) for the key-usage event of ``call``."""
    account = call.account_id
    is_sts = call.service == "sts.amazonaws.com"
    error = call.error
    return dict(
        event_name=call.operation,
        kind=AuditEvent.Kind.KEY_USAGE,
        user_identity=_caller_identity(call),
        event_source=call.service,
        aws_region=call.region,
        request_parameters=_request_parameters(call),
        response_elements=_response_elements(call),
        resources=_role_resources(call) if is_sts else _key_resources(call),
        error_code=(error.code or type(error).__name__) if error is not None else "",
        error_message=error.message if error is not None else "",
        read_only=call.operation in READ_ONLY_OPERATIONS,
        event_type="AwsApiCall",
        event_category="Management",
        request_id=call.request_id,
        recipient_account_id=account,
    )


# --- Record parts -------------------------------------------------------------------------


def role_name_of(role_arn: str) -> str:
    """``arn:aws:iam::123456789012:role/path/name`` → ``name``."""
    return role_arn.rsplit("/", 1)[-1] if "/" in role_arn else ""


def session_arn_prefix(*, account_id: str, role_arn: str) -> str:
    """Every session of the role has an ARN that starts with this (as CloudTrail names it)."""
    return assumed_role_arn(account_id=account_id, role_arn=role_arn, session_name="")


def assumed_role_arn(*, account_id: str, role_arn: str, session_name: str) -> str:
    return f"arn:aws:sts::{account_id}:assumed-role/{role_name_of(role_arn)}/{session_name}"


def _caller_identity(call: aws.KmsCall) -> dict:
    vendor = settings.VENDOR_PRINCIPAL_ARN
    if call.operation == "AssumeRole":
        # Before the session exists the caller is the vendor's own principal, in its account.
        return {
            "type": "AWSAccount",
            "accountId": settings.VENDOR_AWS_ACCOUNT_ID,
            "arn": vendor,
            "invokedBy": vendor,
        }
    return {
        "type": "AssumedRole",
        "arn": assumed_role_arn(
            account_id=call.account_id, role_arn=call.role_arn, session_name=DEFAULT_SESSION_NAME
        ),
        "accountId": call.account_id,
        "invokedBy": vendor,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "arn": call.role_arn,
                "accountId": call.account_id,
                "userName": role_name_of(call.role_arn),
            }
        },
    }


def _camel(name: str) -> str:
    # CloudTrail spells request parameters in lower camel case (KeySpec → keySpec).
    return name[:1].lower() + name[1:]


def _clean(params: dict) -> dict:
    """Drop anything that could be key material, ciphertext or a secret."""
    return {
        _camel(k): v
        for k, v in params.items()
        if k.lower() not in _SECRET_PARAMETERS and not isinstance(v, bytes | bytearray | memoryview)
    }


def _request_parameters(call: aws.KmsCall) -> dict:
    params = _clean(call.request_parameters)
    if call.service == "sts.amazonaws.com":
        params.setdefault("roleArn", call.role_arn)
        return params
    if call.key_arn:
        params["keyId"] = call.key_arn
    if call.operation in CONTEXT_OPERATIONS or call.encryption_context:
        params["encryptionContext"] = dict(call.encryption_context)
    return params


def _response_elements(call: aws.KmsCall) -> dict | None:
    elements = _clean(call.response_elements)
    if call.operation == "AssumeRole" and call.error is None:
        session_name = call.request_parameters.get("roleSessionName") or DEFAULT_SESSION_NAME
        elements.setdefault(
            "assumedRoleUser",
            {
                "arn": assumed_role_arn(
                    account_id=call.account_id, role_arn=call.role_arn, session_name=session_name
                )
            },
        )
    # CloudTrail writes null for KMS's cryptographic operations: nothing worth keeping returns.
    return elements or None


def _key_resources(call: aws.KmsCall) -> list[dict]:
    arn = key_arn_of(call.key_arn, region=call.region, account_id=call.account_id)
    if not arn:
        return []
    return [{"type": "AWS::KMS::Key", "ARN": arn, "accountId": arn.split(":")[4]}]


def _role_resources(call: aws.KmsCall) -> list[dict]:
    if not call.role_arn:
        return []
    return [{"type": "AWS::IAM::Role", "ARN": call.role_arn, "accountId": call.account_id}]


def key_arn_of(key: str, *, region: str, account_id: str) -> str:
    """The key ARN for a key ARN or key ID; ``""`` for an alias (it names no key by itself)."""
    if not key or key.startswith("alias/"):
        return ""
    if key.startswith("arn:"):
        parts = key.split(":", 5)
        return key if len(parts) == 6 and parts[5].startswith("key/") else ""
    if region and account_id:
        return f"arn:aws:kms:{region}:{account_id}:key/{key}"
    return ""
