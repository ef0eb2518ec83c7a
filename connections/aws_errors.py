"""The named causes of a failed AWS call, and the one mapping from botocore's errors to them.

Callers branch on meaning (``KeyDisabled``, ``AccessDenied``, ``Throttled`` …), never on error
strings. ``connections.aws`` re-exports every name here: callers write ``aws.AccessDenied``.
"""

from __future__ import annotations

import botocore.exceptions

# --- Named causes -----------------------------------------------------------------------


class AwsError(Exception):
    """A failed AWS call, classified. ``cause`` is a stable machine name for the failure."""

    cause = "aws-error"
    transient = False

    def __init__(self, message: str, *, region: str = "", code: str = "", operation: str = ""):
        super().__init__(message)
        self.message = message
        self.region = region
        self.code = code
        self.operation = operation


class RoleUnavailable(AwsError):
    """AssumeRole refused: the role is missing or its trust policy does not let us in."""

    cause = "role-unavailable"


class AccessDenied(AwsError):
    cause = "access-denied"


class KeyNotFound(AwsError):
    cause = "key-not-found"


class KeyDisabled(AwsError):
    cause = "key-disabled"


class KeyInvalidState(AwsError):
    """Pending deletion, pending import, unavailable …"""

    cause = "key-invalid-state"


class InvalidCiphertext(AwsError):
    """The wrapped key does not match this key or encryption context."""

    cause = "invalid-ciphertext"


class InvalidRequest(AwsError):
    cause = "invalid-request"


class Throttled(AwsError):
    cause = "throttled"
    transient = True


class Unreachable(AwsError):
    """Timeouts, connection failures and AWS-side 5xx errors."""

    cause = "unreachable"
    transient = True


class ObjectNotFound(AwsError):
    """S3: the bucket or the object does not exist (``NoSuchBucket``, ``NoSuchKey``)."""

    cause = "object-not-found"


class ObjectTooLarge(AwsError):
    """S3: the object is larger than the caller accepts; it was not downloaded."""

    cause = "object-too-large"


# Errors that mean "the customer has taken access away": these revoke at once.
REVOKING_CAUSES = (AccessDenied, RoleUnavailable, KeyDisabled, KeyInvalidState, KeyNotFound)

_CODE_TO_ERROR: dict[str, type[AwsError]] = {
    "AccessDenied": AccessDenied,
    "AccessDeniedException": AccessDenied,
    "NotFoundException": KeyNotFound,
    "DisabledException": KeyDisabled,
    "KMSInvalidStateException": KeyInvalidState,
    "InvalidCiphertextException": InvalidCiphertext,
    "IncorrectKeyException": InvalidCiphertext,
    "InvalidKeyUsageException": InvalidRequest,
    "ValidationException": InvalidRequest,
    "InvalidParameterValue": InvalidRequest,
    "ThrottlingException": Throttled,
    "Throttling": Throttled,
    "RequestLimitExceeded": Throttled,
    "LimitExceededException": Throttled,
    "TooManyRequestsException": Throttled,
    "KMSInternalException": Unreachable,
    "DependencyTimeoutException": Unreachable,
    "InternalFailure": Unreachable,
    "ServiceUnavailable": Unreachable,
}


def classify(exc: Exception, *, region: str = "", operation: str = "") -> AwsError:
    """Map a botocore exception to a named cause."""
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        message = error.get("Message", "") or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if operation == "AssumeRole" and code in ("AccessDenied", "AccessDeniedException"):
            return RoleUnavailable(message, region=region, code=code, operation=operation)
        err_cls = _CODE_TO_ERROR.get(code)
        if err_cls is None:
            err_cls = Unreachable if status >= 500 else AwsError
        return err_cls(message, region=region, code=code, operation=operation)
    if isinstance(
        exc,
        (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.HTTPClientError,
        ),
    ):
        return Unreachable(
            f"AWS did not answer in time ({type(exc).__name__}).",
            region=region,
            code=type(exc).__name__,
            operation=operation,
        )
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return InvalidRequest(
            str(exc), region=region, code="ParamValidationError", operation=operation
        )
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return AwsError("The vendor service has no AWS credentials configured.", region=region)
    return AwsError(
        f"Unexpected AWS failure ({type(exc).__name__}).", region=region, operation=operation
    )
