"""The onboarding kit: valid CloudFormation, tight policies, a simulator that deploys it, and a
kit page only the org's admins can see."""

import json

import pytest
from cfnlint.api import ManualArgs, lint
from moto import mock_aws

from connections import aws
from connections.models import ByokConnection
from core.locations import LOCATIONS
from demo import customer_side
from setup import onboarding
from setup.models import SetupRequest
from tests.factories import PASSWORD, OrganizationFactory, org_admin, org_member

ACCOUNT = "210987654321"
EXTERNAL_ID = "byok-0123456789abcdef0123456789abcdef"
VENDOR = "arn:aws:iam::111122223333:role/byok-portal-service"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/byok-key-management"


def kit(location_code: str, *, replacement: bool = False) -> dict[str, dict]:
    return onboarding.cloudformation_templates(
        location_code=location_code,
        account_id=ACCOUNT,
        external_id=EXTERNAL_ID,
        vendor_principal_arn=VENDOR,
        replacement=replacement,
    )


def resources_of(template: dict, resource_type: str) -> list[dict]:
    return [r for r in template["Resources"].values() if r["Type"] == resource_type]


# --- (a) the templates are valid CloudFormation ---------------------------------------------


@pytest.mark.parametrize("replacement", [False, True], ids=["kit", "replacement"])
@pytest.mark.parametrize("location_code", sorted(LOCATIONS))
def test_every_template_passes_cfn_lint(location_code, replacement):
    for region, template in kit(location_code, replacement=replacement).items():
        matches = lint(json.dumps(template), config=ManualArgs(regions=[region]))
        problems = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id[0] in "EW"]
        assert problems == [], f"{location_code}/{region}: {problems}"


@pytest.mark.parametrize("location_code", sorted(LOCATIONS))
def test_kit_has_one_template_per_region_and_one_role(location_code):
    location = LOCATIONS[location_code]
    templates = kit(location_code)
    assert list(templates) == list(location.regions)
    roles = [r for t in templates.values() for r in resources_of(t, "AWS::IAM::Role")]
    assert len(roles) == 1
    assert resources_of(templates[location.primary_region], "AWS::IAM::Role") == roles
    for template in templates.values():
        (key,) = resources_of(template, "AWS::KMS::Key")
        assert key["Properties"]["KeySpec"] == "SYMMETRIC_DEFAULT"
        assert key["Properties"]["KeyUsage"] == "ENCRYPT_DECRYPT"
        assert key["Properties"]["EnableKeyRotation"] is True
        assert key["DeletionPolicy"] == "Retain"
        (alias,) = resources_of(template, "AWS::KMS::Alias")
        assert alias["Properties"]["AliasName"] == onboarding.KEY_ALIAS
        assert "KeyArn" in template["Outputs"]


def test_template_refuses_the_wrong_account_and_region():
    template = kit("eu")["eu-west-1"]
    asserts = [a["Assert"] for a in template["Rules"]["TargetAccountAndRegion"]["Assertions"]]
    assert {"Fn::Equals": [{"Ref": "AWS::AccountId"}, ACCOUNT]} in asserts
    assert {"Fn::Equals": [{"Ref": "AWS::Region"}, "eu-west-1"]} in asserts


def test_replacement_variant_creates_keys_under_the_next_alias_and_no_role():
    for template in kit("us", replacement=True).values():
        assert resources_of(template, "AWS::IAM::Role") == []
        (alias,) = resources_of(template, "AWS::KMS::Alias")
        assert alias["Properties"]["AliasName"] == onboarding.REPLACEMENT_KEY_ALIAS


def test_template_for_a_region_outside_the_location_is_refused():
    with pytest.raises(ValueError):
        onboarding.cloudformation_template(
            location_code="de",
            account_id=ACCOUNT,
            external_id=EXTERNAL_ID,
            vendor_principal_arn=VENDOR,
            region="us-east-1",
        )


# --- (b) trust policy -------------------------------------------------------------------------


def test_trust_policy_admits_only_the_vendor_with_the_orgs_external_id():
    policy = onboarding.trust_policy(vendor_principal_arn=VENDOR, external_id=EXTERNAL_ID)
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"AWS": VENDOR}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}


def test_kit_role_uses_the_trust_policy():
    (role,) = resources_of(kit("jp")["ap-northeast-1"], "AWS::IAM::Role")
    assert role["Properties"]["RoleName"] == "byok-key-management"
    assert role["Properties"]["AssumeRolePolicyDocument"] == onboarding.trust_policy(
        vendor_principal_arn=VENDOR, external_id=EXTERNAL_ID
    )


# --- (c) key policy ---------------------------------------------------------------------------


def test_key_policy_keeps_root_admin_and_grants_the_role_exactly_the_usage_actions():
    policy = onboarding.key_policy(account_id=ACCOUNT, role_arn=ROLE_ARN)
    by_principal = {s["Principal"]["AWS"]: s for s in policy["Statement"]}
    assert set(by_principal) == {f"arn:aws:iam::{ACCOUNT}:root", ROLE_ARN}
    root = by_principal[f"arn:aws:iam::{ACCOUNT}:root"]
    assert (root["Effect"], root["Action"]) == ("Allow", "kms:*")
    role = by_principal[ROLE_ARN]
    assert role["Effect"] == "Allow"
    assert sorted(role["Action"]) == sorted(
        [
            "kms:DescribeKey",
            "kms:GenerateDataKey",
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:ReEncryptFrom",
            "kms:ReEncryptTo",
        ]
    )


def test_policies_json_matches_the_templates():
    texts = onboarding.policies_json(
        account_id=ACCOUNT, external_id=EXTERNAL_ID, vendor_principal_arn=VENDOR
    )
    template = kit("ca")["ca-central-1"]
    (key,) = resources_of(template, "AWS::KMS::Key")
    (role,) = resources_of(template, "AWS::IAM::Role")
    assert json.loads(texts["key_policy"]) == key["Properties"]["KeyPolicy"]
    assert json.loads(texts["trust_policy"]) == role["Properties"]["AssumeRolePolicyDocument"]


# --- (d) the simulator deploys the kit in moto ------------------------------------------------


@pytest.fixture
def moto_aws(settings):
    settings.AWS_ENDPOINT_URL = None
    aws.forget_sessions()
    with mock_aws():
        yield
    aws.forget_sessions()


def vendor_session():
    return aws.assume_customer_role(role_arn=ROLE_ARN, external_id=EXTERNAL_ID, cached=False)


@pytest.mark.parametrize("location_code", sorted(LOCATIONS))
def test_simulated_customer_side_is_what_the_preflight_expects(moto_aws, location_code):
    key_arns = customer_side.create_customer_side(
        account_id=ACCOUNT,
        location_code=location_code,
        external_id=EXTERNAL_ID,
        vendor_principal_arn=VENDOR,
    )
    assert list(key_arns) == list(LOCATIONS[location_code].regions)
    session = vendor_session()
    for region, key_arn in key_arns.items():
        key = session.describe_key(region, onboarding.KEY_ALIAS)
        assert key.arn == key_arn
        assert key.region == region
        assert key.enabled and key.state == "Enabled"
        assert key.spec == "SYMMETRIC_DEFAULT"
        assert key.usage == "ENCRYPT_DECRYPT"
        assert not key.multi_region


def test_simulated_customer_side_is_idempotent_and_supports_replacement_keys(moto_aws):
    args = {
        "account_id": ACCOUNT,
        "location_code": "eu",
        "external_id": EXTERNAL_ID,
        "vendor_principal_arn": VENDOR,
    }
    first = customer_side.create_customer_side(**args)
    assert customer_side.create_customer_side(**args) == first
    nxt = customer_side.create_customer_side(**args, alias=onboarding.REPLACEMENT_KEY_ALIAS)
    assert set(nxt) == set(first) and set(nxt.values()).isdisjoint(first.values())
    session = vendor_session()
    for region, key_arn in nxt.items():
        assert session.describe_key(region, onboarding.REPLACEMENT_KEY_ALIAS).arn == key_arn
        assert session.describe_key(region, onboarding.KEY_ALIAS).arn == first[region]


def test_simulated_role_carries_the_kit_trust_policy(moto_aws):
    customer_side.create_customer_side(
        account_id=ACCOUNT, location_code="de", external_id=EXTERNAL_ID, vendor_principal_arn=VENDOR
    )
    policy = customer_side.trust_policy_of(account_id=ACCOUNT, role_name="byok-key-management")
    assert policy == onboarding.trust_policy(vendor_principal_arn=VENDOR, external_id=EXTERNAL_ID)


def test_customer_can_deny_and_re_allow_the_vendor(moto_aws):
    customer_side.create_customer_side(
        account_id=ACCOUNT, location_code="de", external_id=EXTERNAL_ID, vendor_principal_arn=VENDOR
    )
    customer_side.deny_vendor_in_trust_policy(account_id=ACCOUNT, role_name="byok-key-management")
    denied = customer_side.trust_policy_of(account_id=ACCOUNT, role_name="byok-key-management")
    assert [(s["Effect"], s["Principal"]) for s in denied["Statement"]] == [
        ("Deny", {"AWS": VENDOR})
    ]
    customer_side.allow_vendor_in_trust_policy(
        account_id=ACCOUNT,
        role_name="byok-key-management",
        vendor_principal_arn=VENDOR,
        external_id=EXTERNAL_ID,
    )
    allowed = customer_side.trust_policy_of(account_id=ACCOUNT, role_name="byok-key-management")
    assert allowed == onboarding.trust_policy(vendor_principal_arn=VENDOR, external_id=EXTERNAL_ID)


def test_customer_key_state_changes_are_visible_to_the_vendor(moto_aws):
    key_arns = customer_side.create_customer_side(
        account_id=ACCOUNT, location_code="us", external_id=EXTERNAL_ID, vendor_principal_arn=VENDOR
    )
    key_arn = key_arns["us-west-2"]
    where = {"account_id": ACCOUNT, "region": "us-west-2", "key_arn": key_arn}
    customer_side.disable_customer_key(**where)
    assert vendor_session().describe_key("us-west-2", key_arn).state == "Disabled"
    customer_side.enable_customer_key(**where)
    assert vendor_session().describe_key("us-west-2", key_arn).state == "Enabled"
    customer_side.schedule_key_deletion(**where)
    assert vendor_session().describe_key("us-west-2", key_arn).state == "PendingDeletion"


def test_customer_mistakes_are_simulated(moto_aws):
    customer_side.create_customer_side(
        account_id=ACCOUNT,
        location_code="eu",
        external_id=EXTERNAL_ID,
        vendor_principal_arn=VENDOR,
        regions=["eu-central-1"],
    )
    with pytest.raises(aws.KeyNotFound):
        vendor_session().describe_key("eu-west-1", onboarding.KEY_ALIAS)
    customer_side.create_asymmetric_key_with_alias(account_id=ACCOUNT, region="eu-west-1")
    key = vendor_session().describe_key("eu-west-1", onboarding.KEY_ALIAS)
    assert not key.is_symmetric_encrypt_decrypt


# --- (e) the kit page ---------------------------------------------------------------------------


@pytest.fixture
def setup_request(db):
    org = OrganizationFactory()
    admin = org_admin(org)
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=ACCOUNT, location="eu"
    )
    req = SetupRequest.objects.create(
        organization=org,
        requested_by=admin,
        aws_account_id=ACCOUNT,
        site_name="acme-secure",
        location="eu",
        apps=["jira"],
    )
    return {"org": org, "admin": admin, "connection": connection, "req": req}


def kit_url(org, req) -> str:
    return f"/orgs/{org.pk}/byok/requests/{req.pk}/kit/"


def login(client, user):
    assert client.login(username=user.email, password=PASSWORD)


def test_org_admin_sees_the_kit_with_the_external_id(client, setup_request):
    org, req = setup_request["org"], setup_request["req"]
    login(client, setup_request["admin"])
    response = client.get(kit_url(org, req))
    assert response.status_code == 200
    body = response.content.decode()
    assert setup_request["connection"].external_id in body
    assert "byok-key-management" in body
    for region in ("eu-central-1", "eu-west-1"):
        assert f"{kit_url(org, req)}{region}.template.json" in body
        assert f"--region {region}" in body
    assert 'data-copy-target="kit-trust-policy"' in body
    assert "<script>" not in body and "style=" not in body


def test_org_admin_downloads_a_regions_template(client, setup_request):
    org, req = setup_request["org"], setup_request["req"]
    login(client, setup_request["admin"])
    response = client.get(f"{kit_url(org, req)}eu-west-1.template.json")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    template = json.loads(response.content)
    assert resources_of(template, "AWS::IAM::Role") == []
    (key,) = resources_of(template, "AWS::KMS::Key")
    assert key["Properties"]["KeyPolicy"]["Statement"][1]["Principal"] == {"AWS": ROLE_ARN}


def test_template_of_a_region_outside_the_location_is_404(client, setup_request):
    org, req = setup_request["org"], setup_request["req"]
    login(client, setup_request["admin"])
    assert client.get(f"{kit_url(org, req)}us-east-1.template.json").status_code == 404


def test_other_orgs_admin_gets_404_on_the_kit(client, setup_request):
    org, req = setup_request["org"], setup_request["req"]
    login(client, org_admin(OrganizationFactory()))
    assert client.get(kit_url(org, req)).status_code == 404
    assert client.get(f"{kit_url(org, req)}eu-west-1.template.json").status_code == 404


def test_admin_gets_404_for_another_orgs_request_under_their_own_org(client, setup_request):
    mine = OrganizationFactory()
    login(client, org_admin(mine))
    ByokConnection.objects.create(organization=mine, aws_account_id=ACCOUNT, location="eu")
    assert client.get(kit_url(mine, setup_request["req"])).status_code == 404


def test_member_gets_403_on_the_kit(client, setup_request):
    org, req = setup_request["org"], setup_request["req"]
    login(client, org_member(org))
    response = client.get(kit_url(org, req))
    assert response.status_code == 403
    assert setup_request["connection"].external_id not in response.content.decode()
