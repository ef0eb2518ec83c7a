"""Plays the *customer* in the local moto endpoint: deploys the onboarding kit, and later
disables keys or denies the vendor the way a customer would. Demo data and tests only — never
used against real AWS (``connections.aws.customer_admin_client`` assumes moto's
OrganizationAccountAccessRole in the customer's account).

The customer side is created by deploying the kit's own CloudFormation templates through moto's
CloudFormation, so what tests and the demo run against is exactly what a customer deploys.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from connections import aws
from core.locations import get_location
from setup import onboarding

# IAM is global; any region reaches it.
_IAM_REGION = "us-east-1"


class CustomerSideError(RuntimeError):
    """The simulated customer could not deploy the kit (a stack failed, an output is missing)."""


def create_customer_side(
    *,
    account_id: str,
    location_code: str,
    external_id: str,
    vendor_principal_arn: str,
    alias: str = onboarding.KEY_ALIAS,
    regions: Iterable[str] | None = None,
) -> dict[str, str]:
    """Deploy the kit in the customer's account: role + one key and alias per region.

    Returns region → key ARN. With ``alias=REPLACEMENT_KEY_ALIAS`` (or any other alias) the
    replacement variant is deployed: keys and alias only, the role must already exist.
    ``regions`` limits the deployment to some regions of the location (a customer who forgot
    one). Idempotent: a region whose stack already exists returns that stack's key.
    """
    location = get_location(location_code)
    replacement = alias != onboarding.KEY_ALIAS
    wanted = set(regions) if regions is not None else set(location.regions)
    stack = alias.removeprefix("alias/")
    templates = onboarding.cloudformation_templates(
        location_code=location_code,
        account_id=account_id,
        external_id=external_id,
        vendor_principal_arn=vendor_principal_arn,
        replacement=replacement,
    )
    key_arns: dict[str, str] = {}
    # Primary first: the other regions' key policies name the role it creates.
    for region, template in templates.items():
        if region not in wanted:
            continue
        cfn = aws.customer_admin_client("cloudformation", region, account_id)
        outputs = _stack_outputs(cfn, stack)
        if outputs is None:
            cfn.create_stack(
                StackName=stack,
                TemplateBody=json.dumps(_for_moto(template, alias=alias)),
                Capabilities=["CAPABILITY_NAMED_IAM"],
                OnFailure="DELETE",
            )
            outputs = _stack_outputs(cfn, stack)
        if not outputs or "KeyArn" not in outputs:
            raise CustomerSideError(f"Stack {stack} in {region} produced no key.")
        key_arns[region] = outputs["KeyArn"]
    return key_arns


def _stack_outputs(cfn, stack: str) -> dict[str, str] | None:
    """Outputs of a completed stack, or None when there is no such stack."""
    try:
        stacks = cfn.describe_stacks(StackName=stack)["Stacks"]
    except cfn.exceptions.ClientError as exc:
        # CloudFormation answers a missing stack with a generic ValidationError.
        if "does not exist" in exc.response.get("Error", {}).get("Message", ""):
            return None
        raise
    live = [s for s in stacks if s["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")]
    if not live:
        return None
    return {o["OutputKey"]: o["OutputValue"] for o in live[0].get("Outputs", [])}


def _for_moto(template: dict[str, Any], *, alias: str) -> dict[str, Any]:
    """The kit's template, adjusted only where moto needs it.

    moto keeps a ``KeyPolicy`` given as an object as a dict and then fails to parse it on every
    KMS call, so the (identical) policy is passed as a JSON string — CloudFormation accepts both.
    """
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        props = resource["Properties"]
        if resource["Type"] == "AWS::KMS::Key":
            props["KeyPolicy"] = json.dumps(props["KeyPolicy"])
        if resource["Type"] == "AWS::KMS::Alias":
            props["AliasName"] = alias
    template["Outputs"]["KeyAlias"]["Value"] = alias
    return template


# --- What a customer does later -----------------------------------------------------------


def _kms(account_id: str, region: str):
    return aws.customer_admin_client("kms", region, account_id)


def _iam(account_id: str):
    return aws.customer_admin_client("iam", _IAM_REGION, account_id)


def _key_id(key_arn: str) -> str:
    # AWS takes an ARN or a key ID here, but moto's Disable/EnableKey only know the key ID.
    return key_arn.rsplit("/", 1)[-1]


def disable_customer_key(*, account_id: str, region: str, key_arn: str) -> None:
    _kms(account_id, region).disable_key(KeyId=_key_id(key_arn))


def enable_customer_key(*, account_id: str, region: str, key_arn: str) -> None:
    _kms(account_id, region).enable_key(KeyId=_key_id(key_arn))


def schedule_key_deletion(
    *, account_id: str, region: str, key_arn: str, pending_window_days: int = 7
) -> None:
    """Schedule deletion (KMS's minimum window is 7 days); the key turns PendingDeletion."""
    _kms(account_id, region).schedule_key_deletion(
        KeyId=_key_id(key_arn), PendingWindowInDays=pending_window_days
    )


def cancel_key_deletion(*, account_id: str, region: str, key_arn: str) -> None:
    """Cancel a scheduled deletion. As in AWS, the key comes back *disabled*."""
    _kms(account_id, region).cancel_key_deletion(KeyId=_key_id(key_arn))


def deny_vendor_in_trust_policy(*, account_id: str, role_name: str) -> None:
    """Revoke as the vendor's docs tell customers to: deny the vendor's principal(s).

    Every principal the trust policy currently allows is denied explicitly (an explicit Deny
    wins over any Allow), falling back to the configured vendor principal.
    """
    iam = _iam(account_id)
    current = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    if isinstance(current, str):
        current = json.loads(current)
    principals = _allowed_principals(current) or [settings.VENDOR_PRINCIPAL_ARN]
    denied = {
        "Version": onboarding.POLICY_VERSION,
        "Statement": [
            {
                "Sid": "DenyByokVendor",
                "Effect": "Deny",
                "Principal": {"AWS": principals[0] if len(principals) == 1 else principals},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.update_assume_role_policy(RoleName=role_name, PolicyDocument=json.dumps(denied))


def allow_vendor_in_trust_policy(
    *, account_id: str, role_name: str, vendor_principal_arn: str, external_id: str
) -> None:
    """Restore the kit's trust policy (the first step of a restore)."""
    policy = onboarding.trust_policy(
        vendor_principal_arn=vendor_principal_arn, external_id=external_id
    )
    _iam(account_id).update_assume_role_policy(
        RoleName=role_name, PolicyDocument=json.dumps(policy)
    )


def trust_policy_of(*, account_id: str, role_name: str) -> dict[str, Any]:
    """The role's current trust policy (as a dict)."""
    document = _iam(account_id).get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def _allowed_principals(policy: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for statement in policy.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        aws_principal = (statement.get("Principal") or {}).get("AWS", [])
        for arn in [aws_principal] if isinstance(aws_principal, str) else aws_principal:
            if arn not in found:
                found.append(arn)
    return found


# --- Mistakes a customer can make (preflight tests) -----------------------------------------


def create_asymmetric_key_with_alias(
    *, account_id: str, region: str, alias: str = onboarding.KEY_ALIAS
) -> str:
    """An RSA key under the kit's alias: the wrong kind of key for envelope encryption."""
    kms = _kms(account_id, region)
    key_arn = kms.create_key(
        KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT", Description="Not a BYOK key"
    )["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=alias, TargetKeyId=key_arn)
    return key_arn


def delete_alias(*, account_id: str, region: str, alias: str = onboarding.KEY_ALIAS) -> None:
    """Remove the alias in one region (the key stays): the vendor can no longer find it."""
    _kms(account_id, region).delete_alias(AliasName=alias)


def rotate_alias_to_new_key(
    *, account_id: str, region: str, alias: str, template_key_arn: str
) -> str:
    """A new key with ``template_key_arn``'s policy and description, and ``alias`` moved to it
    (the customer deploying the replacement-keys template again). Returns the new key's ARN."""
    kms = _kms(account_id, region)
    key_id = _key_id(template_key_arn)
    policy = kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
    description = kms.describe_key(KeyId=key_id)["KeyMetadata"].get("Description", "")
    new_arn = kms.create_key(
        Policy=policy,
        Description=description or "BYOK replacement key",
        KeySpec="SYMMETRIC_DEFAULT",
        KeyUsage="ENCRYPT_DECRYPT",
    )["KeyMetadata"]["Arn"]
    kms.update_alias(AliasName=alias, TargetKeyId=_key_id(new_arn))
    return new_arn


def alias_target(*, account_id: str, region: str, alias: str) -> str:
    """The ARN of the key ``alias`` points at in ``region``."""
    return _kms(account_id, region).describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
