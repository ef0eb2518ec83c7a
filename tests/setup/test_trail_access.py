"""The role's read access to the customer's CloudTrail: offered by the onboarding kit, checked
by the preflight when a CloudTrail source is configured.

moto runs in-process and does not enforce IAM on S3: refusals are injected at the botocore
layer (``connections.aws.EVENT_HOOKS``), so the portal's real client code handles them.
"""

from __future__ import annotations

import json

import pytest
from cfnlint.api import ManualArgs, lint
from django.conf import settings

from audit.models import CloudTrailSource
from connections import aws
from connections.models import ByokConnection
from setup import onboarding
from setup.checks import CAUSE_ACCESS, TRAIL_READ, TrailLocation, run_preflight_checks
from setup.models import SetupRequest
from setup.preflight import trail_of
from tests.customer_aws import CUSTOMER_ACCOUNT, KEY_ALIAS, ROLE_ARN, ROLE_NAME
from tests.factories import OrganizationFactory, org_admin
from tests.support import login_verified

pytestmark = pytest.mark.django_db

EXTERNAL_ID = "byok-0123456789abcdef0123456789abcdef"
BUCKET = "acme-cloudtrail-444455556666"
PREFIX = "AWSLogs/444455556666/CloudTrail/"
CONTEXT = {"org": "1", "site": "acme-secure", "purpose": "preflight"}


def role_template(**trail) -> dict:
    return onboarding.cloudformation_template(
        location_code="us",
        account_id=CUSTOMER_ACCOUNT,
        external_id=EXTERNAL_ID,
        vendor_principal_arn=settings.VENDOR_PRINCIPAL_ARN,
        **trail,
    )


# --- The kit --------------------------------------------------------------------------------


def test_the_trail_policy_lists_only_the_trails_prefix_and_reads_only_its_files():
    policy = onboarding.trail_read_policy(bucket=BUCKET, prefix=PREFIX)
    statements = {s["Action"]: s for s in policy["Statement"]}
    assert set(statements) == {"s3:ListBucket", "s3:GetObject"}
    assert all(s["Effect"] == "Allow" for s in statements.values())
    listing = statements["s3:ListBucket"]
    assert listing["Resource"] == f"arn:aws:s3:::{BUCKET}"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{PREFIX}*"]}}
    assert statements["s3:GetObject"]["Resource"] == f"arn:aws:s3:::{BUCKET}/{PREFIX}*"


def test_the_role_template_offers_trail_read_access_as_an_optional_parameter():
    template = role_template(trail_bucket=BUCKET, trail_prefix=PREFIX)
    parameters = template["Parameters"]
    assert parameters["TrailBucketName"]["Default"] == BUCKET
    assert parameters["TrailPrefix"]["Default"] == PREFIX
    role = template["Resources"]["ByokKeyManagementRole"]["Properties"]
    condition, [policy], otherwise = role["Policies"]["Fn::If"]
    assert condition == "ReadsCloudTrail" and otherwise == {"Ref": "AWS::NoValue"}
    actions = {s["Action"] for s in policy["PolicyDocument"]["Statement"]}
    assert actions == {"s3:ListBucket", "s3:GetObject"}
    # Without a known trail the parameter is empty: the role gets no S3 access at all.
    assert role_template()["Parameters"]["TrailBucketName"]["Default"] == ""
    # The other region's template creates no role, so it has nothing to grant.
    second = onboarding.cloudformation_template(
        location_code="us",
        account_id=CUSTOMER_ACCOUNT,
        external_id=EXTERNAL_ID,
        vendor_principal_arn=settings.VENDOR_PRINCIPAL_ARN,
        region="us-west-2",
        trail_bucket=BUCKET,
    )
    assert "Parameters" not in second


def test_the_role_template_with_a_trail_passes_cfn_lint():
    matches = lint(
        json.dumps(role_template(trail_bucket=BUCKET, trail_prefix=PREFIX)),
        config=ManualArgs(regions=["us-east-1"]),
    )
    assert [f"{m.rule.id} {m.message}" for m in matches if m.rule.id[0] in "EW"] == []


def test_the_cli_command_adds_exactly_the_trail_policy():
    command = onboarding.put_trail_policy_command(role_name=ROLE_NAME, bucket=BUCKET, prefix=PREFIX)
    assert command.startswith("aws iam put-role-policy")
    assert f"--role-name {ROLE_NAME}" in command
    document = command.split("--policy-document '", 1)[1].rstrip("'")
    assert json.loads(document) == onboarding.trail_read_policy(bucket=BUCKET, prefix=PREFIX)


@pytest.fixture
def kit_world():
    org = OrganizationFactory()
    admin = org_admin(org)
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=CUSTOMER_ACCOUNT, location="us"
    )
    req = SetupRequest.objects.create(
        organization=org,
        requested_by=admin,
        aws_account_id=CUSTOMER_ACCOUNT,
        site_name="acme-secure",
        location="us",
        apps=["jira"],
    )
    return org, admin, connection, req


def test_with_a_configured_trail_the_kit_names_it_and_shows_the_policy(client, kit_world):
    org, admin, _, req = kit_world
    CloudTrailSource.objects.create(
        organization=org, bucket=BUCKET, prefix=PREFIX, region="us-east-1"
    )
    login_verified(client, admin)
    page = client.get(f"/orgs/{org.pk}/byok/requests/{req.pk}/kit/").content.decode()
    assert f"s3://{BUCKET}/{PREFIX}" in page
    assert "aws iam put-role-policy" in page
    download = client.get(f"/orgs/{org.pk}/byok/requests/{req.pk}/kit/us-east-1.template.json")
    assert json.loads(download.content)["Parameters"]["TrailBucketName"]["Default"] == BUCKET


def test_the_integrations_page_shows_the_policy_instead_of_asking_to_write_it(client, kit_world):
    org, admin, _, _ = kit_world
    CloudTrailSource.objects.create(
        organization=org, bucket=BUCKET, prefix=PREFIX, region="us-east-1"
    )
    login_verified(client, admin)
    page = client.get(f"/orgs/{org.pk}/audit/integrations/").content.decode()
    assert "Give the role <code>s3:ListBucket</code>" not in page
    assert 'id="trail-policy"' in page and "ReadTheTrailLogFiles" in page


# --- The preflight ----------------------------------------------------------------------------


@pytest.fixture
def customer_with_trail(customer_aws):
    customer_aws.set_up(["us-east-1", "us-west-2"], external_id=EXTERNAL_ID)
    s3 = customer_aws.client("s3", "us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    return s3


def preflight(org, trail: TrailLocation | None):
    return run_preflight_checks(
        org=org,
        role_arn=ROLE_ARN,
        external_id=EXTERNAL_ID,
        location_code="us",
        alias=KEY_ALIAS,
        encryption_context=CONTEXT,
        trail=trail,
    )


def trail_check(report):
    [check] = [c for c in report.checks if c.name == TRAIL_READ]
    return check


TRAIL = TrailLocation(bucket=BUCKET, prefix=PREFIX, region="us-east-1")


def test_the_preflight_lists_the_trail_and_opens_a_log_file(customer_with_trail, aws_spy):
    customer_with_trail.put_object(Bucket=BUCKET, Key=f"{PREFIX}a.json.gz", Body=b"x" * 4096)
    listed, read = aws_spy("s3.ListObjectsV2"), aws_spy("s3.GetObject")
    report = preflight(OrganizationFactory(), TRAIL)
    assert report.passed, report.failures
    check = trail_check(report)
    assert check.region == "us-east-1" and "read its log files" in check.detail
    assert (listed.calls, read.calls) == (1, 1)


def test_an_empty_trail_prefix_passes_and_says_reading_is_checked_later(customer_with_trail):
    check = trail_check(preflight(OrganizationFactory(), TRAIL))
    assert check.passed and "first import" in check.detail


def test_a_role_that_may_not_list_the_trail_fails_with_the_permissions_to_add(
    customer_with_trail, inject_aws_error
):
    inject_aws_error("s3.ListObjectsV2", code="AccessDenied", message="Access Denied", status=403)
    report = preflight(OrganizationFactory(), TRAIL)
    check = trail_check(report)
    assert not check.passed and check.cause == CAUSE_ACCESS
    assert f"may not list s3://{BUCKET}/{PREFIX}" in check.detail
    assert "s3:ListBucket" in check.remediation and "TrailBucketName" in check.remediation
    # Only the trail check failed: the keys are fine.
    assert report.failures == [check]


def test_a_role_that_may_list_but_not_read_fails_on_reading(customer_with_trail, inject_aws_error):
    customer_with_trail.put_object(Bucket=BUCKET, Key=f"{PREFIX}a.json.gz", Body=b"{}")
    inject_aws_error("s3.GetObject", code="AccessDenied", message="Access Denied", status=403)
    check = trail_check(preflight(OrganizationFactory(), TRAIL))
    assert not check.passed
    assert "may not read the log files in" in check.detail and "s3:GetObject" in check.remediation


def test_a_missing_trail_bucket_fails_with_a_clear_message(customer_aws):
    customer_aws.set_up(["us-east-1", "us-west-2"], external_id=EXTERNAL_ID)
    check = trail_check(preflight(OrganizationFactory(), TRAIL))
    assert not check.passed and f"The bucket {BUCKET} was not found" in check.detail


def test_without_a_trail_source_the_preflight_does_not_touch_s3(customer_aws, aws_spy):
    customer_aws.set_up(["us-east-1", "us-west-2"], external_id=EXTERNAL_ID)
    listed = aws_spy("s3.ListObjectsV2")
    report = preflight(OrganizationFactory(), trail_of(OrganizationFactory()))
    assert report.passed and TRAIL_READ not in {c.name for c in report.checks}
    assert listed.calls == 0


def test_only_an_enabled_source_is_checked():
    org = OrganizationFactory()
    ByokConnection.objects.create(organization=org, aws_account_id=CUSTOMER_ACCOUNT, location="us")
    source = CloudTrailSource.objects.create(
        organization=org, bucket=BUCKET, prefix=PREFIX, region="us-east-1", enabled=False
    )
    assert trail_of(org) is None
    source.enabled = True
    source.save()
    assert trail_of(org) == TRAIL


def test_the_demo_customer_can_deploy_the_role_with_the_trail_parameter(customer_aws):
    """moto's CloudFormation deploys the role template with a bucket: the role gets the policy."""
    cfn = customer_aws.client("cloudformation", "us-east-1")
    template = role_template(trail_bucket=BUCKET, trail_prefix=PREFIX)
    for resource in template["Resources"].values():  # as demo.customer_side does for moto
        if resource["Type"] == "AWS::KMS::Key":
            resource["Properties"]["KeyPolicy"] = json.dumps(resource["Properties"]["KeyPolicy"])
    cfn.create_stack(
        StackName="byok-key-management",
        TemplateBody=json.dumps(template),
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    iam = customer_aws.client("iam", "us-east-1")
    assert iam.list_role_policies(RoleName=ROLE_NAME)["PolicyNames"] == ["byok-read-cloudtrail"]
    aws.forget_sessions()
