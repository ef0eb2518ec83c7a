"""Key-usage audit events: every AWS call made with a customer's role, as CloudTrail records it."""

import json

import pytest

from audit.models import AuditEvent
from audit.services import verify_chain
from connections import aws
from connections.key_usage import record_key_usage, recorder_for
from tests.customer_aws import CUSTOMER_ACCOUNT, KEY_ALIAS, ROLE_ARN
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

KEY_ARN = f"arn:aws:kms:us-west-2:{CUSTOMER_ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CONTEXT = {"org": "7", "site": "acme-secure", "app": "jira"}
ASSUMED = f"arn:aws:sts::{CUSTOMER_ACCOUNT}:assumed-role/byok-key-management/byok-portal"


def kms_call(operation="GenerateDataKey", **overrides) -> aws.KmsCall:
    values = {
        "operation": operation,
        "service": "kms.amazonaws.com",
        "region": "us-west-2",
        "key_arn": KEY_ARN,
        "encryption_context": CONTEXT,
        "role_arn": ROLE_ARN,
        "account_id": CUSTOMER_ACCOUNT,
        "request_id": "req-1",
        "request_parameters": {"KeySpec": "AES_256"} if operation == "GenerateDataKey" else {},
    }
    values.update(overrides)
    return aws.KmsCall(**values)


@pytest.fixture
def org():
    return OrganizationFactory()


def test_generate_data_key_is_recorded_like_cloudtrail(org, settings):
    recorder_for(org)(kms_call())

    event = AuditEvent.objects.get(organization=org)
    record = event.record
    assert event.kind == AuditEvent.Kind.KEY_USAGE
    assert record["eventSource"] == "kms.amazonaws.com"
    assert record["eventName"] == "GenerateDataKey"
    assert record["awsRegion"] == "us-west-2"
    assert record["requestParameters"] == {
        "keySpec": "AES_256",
        "keyId": KEY_ARN,
        "encryptionContext": CONTEXT,
    }
    assert record["resources"] == [
        {"type": "AWS::KMS::Key", "ARN": KEY_ARN, "accountId": CUSTOMER_ACCOUNT}
    ]
    assert record["userIdentity"]["type"] == "AssumedRole"
    assert record["userIdentity"]["arn"] == ASSUMED
    assert record["userIdentity"]["accountId"] == CUSTOMER_ACCOUNT
    assert record["userIdentity"]["invokedBy"] == settings.VENDOR_PRINCIPAL_ARN
    assert record["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] == ROLE_ARN
    assert record["recipientAccountId"] == CUSTOMER_ACCOUNT
    assert record["requestID"] == "req-1"
    assert record["eventType"] == "AwsApiCall"
    assert record["eventCategory"] == "Management" and record["managementEvent"] is True
    assert record["readOnly"] is True  # CloudTrail marks KMS cryptographic operations read-only
    assert record["responseElements"] is None
    assert "errorCode" not in record
    # The columns the audit views filter on.
    assert (event.key_arn, event.aws_region, event.principal) == (KEY_ARN, "us-west-2", ASSUMED)


def test_describe_key_is_read_only_and_carries_no_encryption_context(org):
    recorder_for(org)(kms_call("DescribeKey", encryption_context={}))

    record = AuditEvent.objects.get(organization=org).record
    assert record["readOnly"] is True
    assert record["requestParameters"] == {"keyId": KEY_ARN}


def test_a_key_management_operation_is_not_read_only(org):
    recorder_for(org)(kms_call("DisableKey", encryption_context={}))

    assert AuditEvent.objects.get(organization=org).record["readOnly"] is False


def test_a_refused_call_records_aws_error_code_and_message(org):
    error = aws.KeyDisabled(
        "arn:aws:kms:us-west-2:444455556666:key/1234 is disabled.",
        region="us-west-2",
        code="DisabledException",
        operation="Decrypt",
    )

    recorder_for(org)(kms_call("Decrypt", error=error))

    event = AuditEvent.objects.get(organization=org)
    assert event.record["errorCode"] == "DisabledException"
    assert event.record["errorMessage"] == error.message
    assert event.error_code == "DisabledException"
    assert event.record["requestParameters"]["encryptionContext"] == CONTEXT


def test_an_error_without_an_aws_code_is_named_by_its_cause_class(org):
    error = aws.Unreachable("AWS did not answer in time.", region="us-west-2")

    recorder_for(org)(kms_call("Decrypt", error=error))

    assert AuditEvent.objects.get(organization=org).record["errorCode"] == "Unreachable"


def test_a_call_by_alias_that_found_no_key_names_no_key_resource(org):
    recorder_for(org)(
        kms_call(
            "DescribeKey",
            key_arn=KEY_ALIAS,
            encryption_context={},
            error=aws.KeyNotFound("Alias is not found.", code="NotFoundException"),
        )
    )

    event = AuditEvent.objects.get(organization=org)
    assert event.record["resources"] == []
    assert event.record["requestParameters"] == {"keyId": KEY_ALIAS}
    assert event.key_arn == ""


def test_a_bare_key_id_is_recorded_as_its_arn(org):
    recorder_for(org)(kms_call(key_arn="1234abcd-12ab-34cd-56ef-1234567890ab"))

    assert AuditEvent.objects.get(organization=org).key_arn == KEY_ARN


def test_key_material_and_ciphertext_are_never_recorded(org):
    call = kms_call(
        "Encrypt",
        request_parameters={
            "Plaintext": b"super-secret-plaintext",
            "CiphertextBlob": b"wrapped-bytes",
            "SomethingElse": b"raw-bytes",
            "NumberOfBytes": 32,
        },
        response_elements={"Plaintext": "c3VwZXI=", "KeyId": KEY_ARN},
    )

    recorder_for(org)(call)

    record = AuditEvent.objects.get(organization=org).record
    dumped = json.dumps(record)
    for leaked in ("super-secret", "wrapped-bytes", "raw-bytes", "c3VwZXI=", "laintext", "Blob"):
        assert leaked not in dumped
    assert record["requestParameters"]["numberOfBytes"] == 32
    assert record["responseElements"] == {"keyId": KEY_ARN}


def test_assume_role_is_recorded_as_the_vendor_principal_calling_sts(org, settings):
    call = aws.KmsCall(
        operation="AssumeRole",
        service="sts.amazonaws.com",
        region="us-east-1",
        key_arn="",
        encryption_context={},
        role_arn=ROLE_ARN,
        account_id=CUSTOMER_ACCOUNT,
        request_id="sts-1",
        request_parameters={"roleArn": ROLE_ARN, "roleSessionName": "byok-portal"},
    )

    event = record_key_usage(org=org, call=call)

    record = event.record
    assert record["eventSource"] == "sts.amazonaws.com"
    assert record["userIdentity"]["arn"] == settings.VENDOR_PRINCIPAL_ARN
    assert record["userIdentity"]["accountId"] == settings.VENDOR_AWS_ACCOUNT_ID
    assert record["resources"] == [
        {"type": "AWS::IAM::Role", "ARN": ROLE_ARN, "accountId": CUSTOMER_ACCOUNT}
    ]
    assert record["requestParameters"] == {"roleArn": ROLE_ARN, "roleSessionName": "byok-portal"}
    assert record["responseElements"] == {"assumedRoleUser": {"arn": ASSUMED}}
    assert record["readOnly"] is True and record["eventCategory"] == "Management"
    assert record["recipientAccountId"] == CUSTOMER_ACCOUNT


def test_events_join_the_organizations_hash_chain(org):
    record = recorder_for(org)
    for operation in ("DescribeKey", "GenerateDataKey", "Decrypt"):
        record(kms_call(operation))

    assert AuditEvent.objects.filter(organization=org).count() == 3
    assert verify_chain(f"org:{org.pk}") is None


def test_real_calls_through_keys_aws_are_recorded(customer_aws, org):
    customer_aws.create_role(external_id="byok-ext-id-1")
    key_arn = customer_aws.create_key("eu-west-1")

    session = aws.assume_customer_role(
        role_arn=customer_aws.role_arn,
        external_id="byok-ext-id-1",
        cached=False,
        on_call=recorder_for(org),
    )
    plaintext, blob, _ = session.generate_data_key("eu-west-1", key_arn, CONTEXT)
    assert session.decrypt("eu-west-1", key_arn, blob, CONTEXT) == plaintext

    events = list(AuditEvent.objects.filter(organization=org).order_by("sequence"))
    assert [e.event_name for e in events] == ["AssumeRole", "GenerateDataKey", "Decrypt"]
    assert [e.key_arn for e in events] == ["", key_arn, key_arn]
    dumped = json.dumps([e.record for e in events])
    assert plaintext.hex() not in dumped


def test_a_call_recorded_inside_a_callers_transaction_is_refused_not_tied_to_it(org):
    """The record of a call that happened must not roll back with the caller's work: the
    recorder commits on its own, and calling AWS inside a transaction is a loud error."""
    from django.db import transaction

    with pytest.raises(RuntimeError, match="durable"):
        with transaction.atomic():
            recorder_for(org)(kms_call())
    assert not AuditEvent.objects.filter(organization=org).exists()


def test_every_attempt_aws_answered_is_recorded_retries_included(
    customer_aws, org, aws_hooks, no_retry_delay
):
    """botocore retries a throttled call under a new request ID and CloudTrail logs both
    attempts: both are on record, so the customer's trail never shows a call we cannot name."""
    from tests.customer_aws import error_response

    customer_aws.create_role(external_id="byok-ext-id-1")
    key_arn = customer_aws.create_key("eu-west-1")
    throttled = {"sts": 1, "kms": 2}  # attempts to refuse before AWS answers normally

    def throttle(service):
        def before_send(request, **kwargs):
            if throttled[service]:
                throttled[service] -= 1
                code = "Throttling" if service == "sts" else "ThrottlingException"
                return error_response(request, service=service, code=code, message=code, status=400)
            return None

        return before_send

    aws_hooks.append(("before-send.sts.AssumeRole", throttle("sts")))
    aws_hooks.append(("before-send.kms.DescribeKey", throttle("kms")))
    session = aws.assume_customer_role(
        role_arn=customer_aws.role_arn,
        external_id="byok-ext-id-1",
        cached=False,
        on_call=recorder_for(org),
    )
    session.describe_key("eu-west-1", key_arn)

    events = list(AuditEvent.objects.filter(organization=org).order_by("sequence"))
    assert [(e.event_name, e.error_code) for e in events] == [
        ("AssumeRole", "Throttling"),
        ("AssumeRole", ""),
        ("DescribeKey", "ThrottlingException"),
        ("DescribeKey", "ThrottlingException"),
        ("DescribeKey", ""),
    ]
    request_ids = [e.request_id for e in events]
    assert len(set(request_ids)) == 5 and all(request_ids)
