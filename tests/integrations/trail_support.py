"""The customer's CloudTrail as the ingestion tests see it: records, log files, and an org
whose BYOK connection and trail bucket live in moto (in-process)."""

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta

from audit.models import AuditEvent, CloudTrailSource
from connections.models import ByokConnection, ConnectionState, RegionalKey
from tests.customer_aws import CUSTOMER_ACCOUNT, CustomerAws
from tests.factories import OrganizationFactory

BUCKET = "acme-cloudtrail"
PREFIX = "AWSLogs/444455556666/CloudTrail/"
OTHER_KEY = "arn:aws:kms:us-east-1:999988887777:key/0b0b0b0b-1111-2222-3333-444455556666"
RETIRED_KEY_ID = "5e7a1b2c-0000-4000-8000-00000000dead"
RETIRED_KEY = f"arn:aws:kms:us-east-1:{CUSTOMER_ACCOUNT}:key/{RETIRED_KEY_ID}"


def ct_record(
    name="Decrypt",
    *,
    key_arn=None,
    request_parameters=None,
    source="kms.amazonaws.com",
    identity=None,
    when=None,
    account=CUSTOMER_ACCOUNT,
):
    """A CloudTrail record as AWS writes it to the customer's trail."""
    when = when or datetime.now(UTC) - timedelta(hours=1)
    return {
        "eventVersion": "1.08",
        "userIdentity": identity
        or {"type": "IAMUser", "arn": f"arn:aws:iam::{account}:user/alice", "accountId": account},
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2.15",
        "requestParameters": request_parameters
        if request_parameters is not None
        else ({"keyId": key_arn} if key_arn else None),
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "readOnly": True,
        "resources": [{"accountId": account, "type": "AWS::KMS::Key", "ARN": key_arn}]
        if key_arn
        else [],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
        "eventCategory": "Management",
    }


def gz(document) -> bytes:
    return gzip.compress(json.dumps(document).encode())


def log_key(n: int, region="us-east-1") -> str:
    return (
        f"{PREFIX}{region}/2026/11/29/{CUSTOMER_ACCOUNT}_CloudTrail_{region}_"
        f"20261129T{n:04d}Z_abc{n}.json.gz"
    )


def byok_org(customer: CustomerAws, *, name="Acme", bucket=BUCKET, scope="byok"):
    """An org with an active connection to (moto) keys, a retired key, and a trail bucket."""
    org = OrganizationFactory(name=name)
    connection = ByokConnection.objects.create(
        organization=org,
        aws_account_id=customer.account_id,
        location="us",
        state=ConnectionState.ACTIVE,
    )
    arns = customer.set_up(["us-east-1", "us-west-2"], external_id=connection.external_id)
    for region, arn in arns.items():
        RegionalKey.objects.create(connection=connection, region=region, key_arn=arn)
    customer.client("s3", "us-east-1").create_bucket(Bucket=bucket)
    source = CloudTrailSource.objects.create(
        organization=org, bucket=bucket, prefix=PREFIX, region="us-east-1", scope=scope
    )
    return org, connection, arns, source


def put(s3, key, body, bucket=BUCKET):
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def ingested(org):
    return list(
        AuditEvent.objects.filter(organization=org, kind=AuditEvent.Kind.INGESTED)
        .order_by("sequence")
        .values_list("record", flat=True)
    )
