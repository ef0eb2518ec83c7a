"""Fixtures for the keys tests: in-process moto, the customer's AWS side, and AWS failures.

``mock_aws``        moto in-process (``moto.mock_aws``), no endpoint URL, fresh session cache.
``customer_aws``    plays the customer: the IAM role and one aliased key per region, created
                    directly with ``connections.aws.customer_admin_client`` (moto does not
                    check them).
``inject_aws_error`` makes one AWS operation fail at the botocore layer
                    (``connections.aws.EVENT_HOOKS``):
                    an HTTP error response (so botocore parses and retries it as it would a real
                    one), a raised exception (timeouts), or a rewritten parsed response.
``aws_spy``         observes real responses (e.g. to learn a data key and prove it is not logged).

Hooks are installed by replacing ``connections.aws.EVENT_HOOKS`` with a fresh list via
monkeypatch, so
they are removed after each test even when it fails. They reach every client ``connections.aws``
makes — the customer's own admin clients too — so set up the customer's side first, then inject.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import botocore.awsrequest
import botocore.retries.standard
import moto
import pytest

from connections import aws

CUSTOMER_ACCOUNT = "444455556666"
ROLE_NAME = "byok-key-management"
ROLE_ARN = f"arn:aws:iam::{CUSTOMER_ACCOUNT}:role/{ROLE_NAME}"
KEY_ALIAS = "alias/byok-key-management"


@pytest.fixture
def mock_aws(settings) -> Iterator[None]:
    """moto in-process for this test; the settings point nowhere else."""
    settings.AWS_ENDPOINT_URL = None
    settings.AWS_MAX_ATTEMPTS = 3
    aws.forget_sessions()
    with moto.mock_aws():
        yield
    aws.forget_sessions()


@pytest.fixture
def aws_hooks(monkeypatch) -> list:
    """A fresh ``connections.aws.EVENT_HOOKS`` for this test, dropped afterwards."""
    hooks: list = []
    monkeypatch.setattr(aws, "EVENT_HOOKS", hooks)
    return hooks


@pytest.fixture
def no_retry_delay(monkeypatch) -> None:
    """botocore still retries (standard mode) but without its exponential back-off sleeps."""
    monkeypatch.setattr(
        botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0
    )


class _RawBody:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **kwargs):
        yield self._body


def error_response(request, *, service: str, code: str, message: str, status: int):
    """An AWS error response in the service's wire protocol (query XML for STS, JSON for KMS)."""
    request_id = str(uuid.uuid4())
    if service == "sts":
        body = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = {"x-amzn-RequestId": request_id, "Content-Type": "text/xml"}
    else:
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = {"x-amzn-RequestId": request_id, "Content-Type": "application/x-amz-json-1.1"}
    return botocore.awsrequest.AWSResponse(request.url, status, headers, _RawBody(body))


@dataclass
class Injection:
    operation: str
    calls: int = 0
    seen: list[Any] = field(default_factory=list)


@pytest.fixture
def inject_aws_error(aws_hooks, no_retry_delay) -> Callable[..., Injection]:
    """``inject_aws_error("kms.DescribeKey", code=…, status=…)`` → an :class:`Injection`.

    * ``code``/``message``/``status``: every attempt gets that AWS error response
      (``before-send``: botocore parses it and retries it like a real one).
    * ``exception``: every attempt raises it (e.g. ``ConnectTimeoutError``).
    * ``rewrite``: ``rewrite(parsed)`` edits the real parsed response (``after-call``).
    ``Injection.calls`` counts the attempts that reached the hook.
    """

    def inject(
        operation: str,
        *,
        code: str = "",
        message: str = "",
        status: int = 400,
        exception: Exception | None = None,
        rewrite: Callable[[dict], None] | None = None,
    ) -> Injection:
        service, _, op_name = operation.partition(".")
        injection = Injection(operation)
        if rewrite is not None:

            def after_call(http_response, parsed, model, **kwargs):
                injection.calls += 1
                rewrite(parsed)

            aws_hooks.append((f"after-call.{operation}", after_call))
            return injection

        def before_send(request, **kwargs):
            injection.calls += 1
            if exception is not None:
                raise exception
            return error_response(
                request, service=service, code=code, message=message or code, status=status
            )

        aws_hooks.append((f"before-send.{operation}", before_send))
        return injection

    return inject


@pytest.fixture
def aws_spy(aws_hooks) -> Callable[[str], Injection]:
    """``aws_spy("kms.GenerateDataKey")`` → an Injection whose ``seen`` holds parsed responses."""

    def spy(operation: str) -> Injection:
        injection = Injection(operation)

        def after_call(http_response, parsed, model, **kwargs):
            injection.calls += 1
            injection.seen.append(dict(parsed))

        aws_hooks.append((f"after-call.{operation}", after_call))
        return injection

    return spy


class CustomerAws:
    """The customer's account, administered as the onboarding kit would (moto only)."""

    def __init__(self, account_id: str = CUSTOMER_ACCOUNT):
        self.account_id = account_id
        self.role_arn = f"arn:aws:iam::{account_id}:role/{ROLE_NAME}"
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str):
        # Reused: each new boto3 client costs ~0.3 s of model loading.
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = aws.customer_admin_client(service, region, self.account_id)
        return self._clients[key]

    def kms(self, region: str):
        return self.client("kms", region)

    def create_role(self, *, external_id: str) -> str:
        from django.conf import settings

        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": settings.VENDOR_PRINCIPAL_ARN},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
                }
            ],
        }
        return self.client("iam", "us-east-1").create_role(
            RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust)
        )["Role"]["Arn"]

    def create_key(
        self,
        region: str,
        *,
        alias: str | None = KEY_ALIAS,
        key_spec: str = "SYMMETRIC_DEFAULT",
        key_usage: str = "ENCRYPT_DECRYPT",
    ) -> str:
        kms = self.kms(region)
        key = kms.create_key(
            KeyUsage=key_usage, KeySpec=key_spec, Description="BYOK key (onboarding kit)"
        )["KeyMetadata"]
        if alias:
            kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
        return key["Arn"]

    def set_up(self, regions, *, external_id: str) -> dict[str, str]:
        """Role plus one aliased symmetric key per region: region → key ARN."""
        self.create_role(external_id=external_id)
        return {region: self.create_key(region) for region in regions}

    # moto's DisableKey / ScheduleKeyDeletion look keys up by key ID only (not by ARN).
    def disable_key(self, region: str, key_arn: str) -> None:
        self.kms(region).disable_key(KeyId=key_arn.rsplit("/", 1)[-1])

    def schedule_deletion(self, region: str, key_arn: str) -> None:
        key_id = key_arn.rsplit("/", 1)[-1]
        self.kms(region).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)


@pytest.fixture
def customer_aws(mock_aws) -> CustomerAws:
    return CustomerAws()


class _Refused:
    """Just enough of an HTTP response for botocore to raise the parsed error."""

    status_code = 400
    headers: dict = {}


def deny_encryption_context(hooks: list, **match: str) -> list[dict]:
    """A customer-side ``Deny`` conditioned on ``kms:EncryptionContext:<key>``, which moto does
    not evaluate: every KMS call whose encryption context has all of ``match`` (e.g.
    ``app="jira", site="acme-secure"``) gets ``AccessDeniedException``, at the botocore layer
    (``before-call.kms``), before any request is sent. Returns the contexts it refused."""
    refused: list[dict] = []

    def before_call(params, **kwargs):
        body = params.get("body") or b"{}"
        context = (
            json.loads(body if isinstance(body, (bytes, str)) else b"{}").get("EncryptionContext")
            or {}
        )
        if all(context.get(k) == v for k, v in match.items()):
            refused.append(context)
            message = (
                "User is not authorized to perform: kms:Encrypt with an explicit deny in a "
                "resource-based policy (injected)"
            )
            return _Refused(), {
                "Error": {"Code": "AccessDeniedException", "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
        return None

    hooks.append(("before-call.kms", before_call))
    aws.forget_sessions()  # hooks bind when a client is created
    return refused
