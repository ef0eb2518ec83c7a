"""The onboarding kit: what a customer deploys in their own AWS account so the vendor can use
their keys — an IAM role the vendor may assume (with the org's ExternalId) and one symmetric KMS
key per region of the location, reachable by a well-known alias.

Pure functions: no Django request, no AWS calls. The same documents are used for the
CloudFormation templates, for the JSON shown to customers who prefer the console or their own
tooling, and by :mod:`demo.customer_side` to play the customer in moto.

Multi-region locations (Europe, USA) — why one template *per region*
--------------------------------------------------------------------
A CloudFormation stack lives in exactly one region, and ``AWS::KMS::Key`` creates the key in
the stack's region. So a single template cannot create keys in eu-central-1 *and* eu-west-1.
Two real options exist:

* **One stack per region** (chosen). The primary region's template creates the IAM role (IAM is
  global, so it must exist once) plus that region's key and alias; every other region's
  template creates only its key and alias. Each key is an ordinary single-region key, which is
  exactly what the vendor's preflight expects: it resolves ``alias/byok-key-management`` in
  each region and requires a key *in that region*, enabled, ``SYMMETRIC_DEFAULT`` and
  ``ENCRYPT_DECRYPT``. Two independent keys also keep the kill switch per region: disabling one
  key cannot be undone by its twin.
* KMS multi-Region keys (``MultiRegion`` + ``AWS::KMS::ReplicaKey``). Rejected: the replica
  still needs a second stack in the replica region (so no fewer deployments), both regions share
  one key material (a DEK wrapped in one region decrypts in the other, so the "wrap under each
  region's key" design gains nothing), and replicas lag the primary's policy and state.

Order matters: a key policy naming the role is refused by KMS while the role does not exist
(``MalformedPolicyDocumentException``: invalid principal), so the primary region's stack is
deployed first. Each template carries a CloudFormation ``Rules`` check of its account and region,
so a template deployed in the wrong place fails before creating anything.

Keys and aliases are kept (``DeletionPolicy: Retain``) if the stack is deleted: a deleted stack
must never schedule the deletion of keys that app data depends on. The role is not retained:
deleting the stack is one legitimate way to take the vendor's access away.

The customer's CloudTrail (optional): the portal imports the trail's log files from S3 through
the same role, so the role may read them — ``s3:ListBucket`` on the trail bucket (limited to the
trail's prefix) and ``s3:GetObject`` on the prefix, nothing else. The primary region's template
takes the bucket and prefix as parameters (``TrailBucketName``, ``TrailPrefix``; empty: no S3
permission at all), prefilled when the org has configured its trail, and
:func:`trail_read_policy` is the same inline policy for customers who add it by hand.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from core.locations import get_location

KEY_ALIAS = "alias/byok-key-management"
# For re-encryption: the new keys sit beside the current ones under their own alias.
REPLACEMENT_KEY_ALIAS = "alias/byok-key-management-next"

POLICY_VERSION = "2012-10-17"
#: What the vendor's role may do with a key: wrap/unwrap data keys and re-wrap them between
#: keys (re-encryption). No administration, no grants, no key-policy changes.
VENDOR_KEY_ACTIONS: tuple[str, ...] = (
    "kms:DescribeKey",
    "kms:GenerateDataKey",
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
)

#: What the role may do with the customer's CloudTrail bucket: read the trail's log files.
TRAIL_READ_ACTIONS: tuple[str, ...] = ("s3:ListBucket", "s3:GetObject")
TRAIL_POLICY_NAME = "byok-read-cloudtrail"

# Logical IDs inside the templates (stable: outputs and stack updates rely on them).
ROLE_RESOURCE = "ByokKeyManagementRole"
TRAIL_BUCKET_PARAMETER = "TrailBucketName"
TRAIL_PREFIX_PARAMETER = "TrailPrefix"
TRAIL_CONDITION = "ReadsCloudTrail"
KEY_RESOURCE = "ByokKey"
ALIAS_RESOURCE = "ByokKeyAlias"


def default_role_name() -> str:
    return settings.BYOK_ROLE_NAME


def role_arn_for(account_id: str, name: str | None = None) -> str:
    return f"arn:aws:iam::{account_id}:role/{name or default_role_name()}"


def creates_role(*, location_code: str, region: str, replacement: bool = False) -> bool:
    """Only the primary region's first-time template creates the (global) IAM role."""
    return not replacement and region == get_location(location_code).primary_region


def stack_name(*, replacement: bool = False) -> str:
    """The stack name suggested to customers (stacks are regional: same name in each region)."""
    return "byok-key-management-next" if replacement else "byok-key-management"


# --- Policies ---------------------------------------------------------------------------


def trust_policy(*, vendor_principal_arn: str, external_id: str) -> dict[str, Any]:
    """The role's trust policy: only the vendor's principal, and only with the org's ExternalId.

    The ExternalId condition is the confused-deputy guard: another vendor customer who learns
    the role ARN still cannot make the vendor assume it on their behalf.
    """
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "AllowByokVendorWithExternalId",
                "Effect": "Allow",
                "Principal": {"AWS": vendor_principal_arn},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }


def key_policy(*, account_id: str, role_arn: str) -> dict[str, Any]:
    """A key policy that keeps the customer in charge and lets the vendor's role use the key.

    The account root keeps ``kms:*`` so the customer's own IAM admins can always manage (and
    disable) the key; without it the key could become unmanageable.
    """
    return {
        "Version": POLICY_VERSION,
        "Id": "byok-key-management",
        "Statement": [
            {
                "Sid": "KeepAccountAdministration",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "AllowByokRoleToUseTheKey",
                "Effect": "Allow",
                "Principal": {"AWS": role_arn},
                "Action": list(VENDOR_KEY_ACTIONS),
                "Resource": "*",
            },
        ],
    }


def trail_read_policy(*, bucket: str, prefix: str = "") -> dict[str, Any]:
    """The role's inline policy for the trail bucket: list the prefix, read its log files."""
    list_statement: dict[str, Any] = {
        "Sid": "ListTheTrailLogFiles",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": f"arn:aws:s3:::{bucket}",
    }
    if prefix:
        list_statement["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            list_statement,
            {
                "Sid": "ReadTheTrailLogFiles",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
            },
        ],
    }


def trail_policy_json(*, bucket: str, prefix: str = "") -> str:
    return _pretty(trail_read_policy(bucket=bucket, prefix=prefix))


def put_trail_policy_command(*, role_name: str, bucket: str, prefix: str = "") -> str:
    """The AWS CLI command that adds the trail read policy to an existing role."""
    policy = json.dumps(trail_read_policy(bucket=bucket, prefix=prefix), separators=(",", ":"))
    return " \\\n  ".join(
        [
            "aws iam put-role-policy",
            f"--role-name {role_name}",
            f"--policy-name {TRAIL_POLICY_NAME}",
            f"--policy-document '{policy}'",
        ]
    )


def trail_policy_for(*, role_name: str, trail) -> dict[str, str] | None:
    """The inline policy (JSON) and the CLI command that adds it, for a known trail."""
    if trail is None:
        return None
    return {
        "json": trail_policy_json(bucket=trail.bucket, prefix=trail.prefix),
        "command": put_trail_policy_command(
            role_name=role_name, bucket=trail.bucket, prefix=trail.prefix
        ),
    }


def _trail_policy_in_template() -> dict[str, Any]:
    """:func:`trail_read_policy` over the template's parameters (CloudFormation fills them)."""
    bucket = f"arn:${{AWS::Partition}}:s3:::${{{TRAIL_BUCKET_PARAMETER}}}"
    return {
        "PolicyName": TRAIL_POLICY_NAME,
        "PolicyDocument": {
            "Version": POLICY_VERSION,
            "Statement": [
                {
                    "Sid": "ListTheTrailLogFiles",
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": {"Fn::Sub": bucket},
                    "Condition": {
                        "StringLike": {
                            "s3:prefix": [{"Fn::Sub": f"${{{TRAIL_PREFIX_PARAMETER}}}*"}]
                        }
                    },
                },
                {
                    "Sid": "ReadTheTrailLogFiles",
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": {"Fn::Sub": f"{bucket}/${{{TRAIL_PREFIX_PARAMETER}}}*"},
                },
            ],
        },
    }


def policies_json(
    *,
    account_id: str,
    external_id: str,
    vendor_principal_arn: str,
    role_name: str | None = None,
) -> dict[str, str]:
    """Pretty JSON of both policies, for customers who do not use CloudFormation.

    Returns ``{"trust_policy": …, "key_policy": …}``; the key policy is the same in every region.
    """
    return {
        "trust_policy": _pretty(
            trust_policy(vendor_principal_arn=vendor_principal_arn, external_id=external_id)
        ),
        "key_policy": _pretty(
            key_policy(account_id=account_id, role_arn=role_arn_for(account_id, role_name))
        ),
    }


def _pretty(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2)


# --- CloudFormation ---------------------------------------------------------------------


def cloudformation_templates(
    *,
    location_code: str,
    account_id: str,
    external_id: str,
    vendor_principal_arn: str,
    replacement: bool = False,
    role_name: str | None = None,
    trail_bucket: str = "",
    trail_prefix: str = "",
) -> dict[str, dict[str, Any]]:
    """Region → template, primary region first (deploy in that order)."""
    location = get_location(location_code)
    return {
        region: cloudformation_template(
            location_code=location_code,
            account_id=account_id,
            external_id=external_id,
            vendor_principal_arn=vendor_principal_arn,
            replacement=replacement,
            region=region,
            role_name=role_name,
            trail_bucket=trail_bucket,
            trail_prefix=trail_prefix,
        )
        for region in location.regions
    }


def cloudformation_template(
    *,
    location_code: str,
    account_id: str,
    external_id: str,
    vendor_principal_arn: str,
    replacement: bool = False,
    region: str | None = None,
    role_name: str | None = None,
    trail_bucket: str = "",
    trail_prefix: str = "",
) -> dict[str, Any]:
    """The CloudFormation template for one region of the location (default: the primary).

    The primary region's template also creates the IAM role, unless ``replacement`` (the role
    already exists; replacement keys get the ``-next`` alias). See the module docstring for why
    multi-region locations get one template per region. ``trail_bucket``/``trail_prefix`` are
    the defaults of the role template's CloudTrail parameters (the org's trail, when known).
    """
    location = get_location(location_code)
    region = region or location.primary_region
    if region not in location.regions:
        raise ValueError(f"{region} is not a region of {location}.")
    name = role_name or default_role_name()
    role_arn = role_arn_for(account_id, name)
    alias = REPLACEMENT_KEY_ALIAS if replacement else KEY_ALIAS
    with_role = creates_role(location_code=location_code, region=region, replacement=replacement)
    position = f"{location.regions.index(region) + 1} of {len(location.regions)}"

    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    if with_role:
        resources[ROLE_RESOURCE] = {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "RoleName": name,
                "Description": (
                    "Lets the BYOK vendor use this account's KMS keys to encrypt app data. "
                    "Deny the vendor here (or disable the keys) to revoke access."
                ),
                "AssumeRolePolicyDocument": trust_policy(
                    vendor_principal_arn=vendor_principal_arn, external_id=external_id
                ),
                # The vendor re-assumes well within an hour; never allow longer sessions.
                "MaxSessionDuration": 3600,
                # Read access to the customer's trail, only when they name its bucket.
                "Policies": {
                    "Fn::If": [
                        TRAIL_CONDITION,
                        [_trail_policy_in_template()],
                        {"Ref": "AWS::NoValue"},
                    ]
                },
            },
        }
        outputs["RoleArn"] = {
            "Description": "ARN of the role the vendor assumes.",
            "Value": {"Fn::GetAtt": [ROLE_RESOURCE, "Arn"]},
        }

    key: dict[str, Any] = {
        "Type": "AWS::KMS::Key",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Description": (
                f"BYOK {'replacement ' if replacement else ''}key for app data in "
                f"{location.name}, region {region}."
            ),
            "KeySpec": "SYMMETRIC_DEFAULT",
            "KeyUsage": "ENCRYPT_DECRYPT",
            "EnableKeyRotation": True,
            "Enabled": True,
            "KeyPolicy": key_policy(account_id=account_id, role_arn=role_arn),
        },
    }
    if with_role:
        # The policy names the role by ARN (a plain string, so it reads the same as the JSON
        # shown to customers); KMS refuses principals that do not exist yet.
        key["DependsOn"] = [ROLE_RESOURCE]
    resources[KEY_RESOURCE] = key
    resources[ALIAS_RESOURCE] = {
        "Type": "AWS::KMS::Alias",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {"AliasName": alias, "TargetKeyId": {"Ref": KEY_RESOURCE}},
    }
    outputs["KeyArn"] = {
        "Description": f"ARN of the BYOK key in {region}.",
        "Value": {"Fn::GetAtt": [KEY_RESOURCE, "Arn"]},
    }
    outputs["KeyAlias"] = {"Description": "Alias the vendor looks the key up by.", "Value": alias}

    what = "replacement key" if replacement else ("IAM role and key" if with_role else "key")
    template: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": (
            f"BYOK onboarding kit: {what} for location {location.name}, "
            f"region {region} ({position}). Account {account_id}."
        ),
        "Rules": {
            # Fail fast (before any resource exists) when deployed in the wrong place.
            "TargetAccountAndRegion": {
                "Assertions": [
                    {
                        "Assert": {"Fn::Equals": [{"Ref": "AWS::AccountId"}, account_id]},
                        "AssertDescription": f"Deploy this template in AWS account {account_id}.",
                    },
                    {
                        "Assert": {"Fn::Equals": [{"Ref": "AWS::Region"}, region]},
                        "AssertDescription": f"Deploy this template in region {region}.",
                    },
                ]
            }
        },
        "Resources": resources,
        "Outputs": outputs,
    }
    if with_role:
        template["Parameters"] = _trail_parameters(bucket=trail_bucket, prefix=trail_prefix)
        template["Conditions"] = {
            TRAIL_CONDITION: {"Fn::Not": [{"Fn::Equals": [{"Ref": TRAIL_BUCKET_PARAMETER}, ""]}]}
        }
    return template


def _trail_parameters(*, bucket: str, prefix: str) -> dict[str, Any]:
    return {
        TRAIL_BUCKET_PARAMETER: {
            "Type": "String",
            "Default": bucket,
            "AllowedPattern": "^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
            "Description": (
                "Optional: the S3 bucket your CloudTrail writes to. The role may then list the "
                "trail's prefix and read its log files (s3:ListBucket, s3:GetObject), so the "
                "portal can import them. Empty: no S3 access."
            ),
        },
        TRAIL_PREFIX_PARAMETER: {
            "Type": "String",
            "Default": prefix,
            "Description": "Optional: the key prefix of the trail's log files, e.g. AWSLogs/.",
        },
    }


def template_json(template: dict[str, Any]) -> str:
    return json.dumps(template, indent=2) + "\n"


def deploy_command(*, location_code: str, region: str, replacement: bool = False) -> str:
    """The AWS CLI command that deploys one region's downloaded template."""
    parts = [
        "aws cloudformation deploy",
        f"--region {region}",
        f"--stack-name {stack_name(replacement=replacement)}",
        "--template-file "
        + template_filename(location_code=location_code, region=region, replacement=replacement),
    ]
    if creates_role(location_code=location_code, region=region, replacement=replacement):
        # A role with a fixed RoleName needs the customer's explicit acknowledgement.
        parts.append("--capabilities CAPABILITY_NAMED_IAM")
    return " \\\n  ".join(parts)


def template_filename(*, location_code: str, region: str, replacement: bool = False) -> str:
    suffix = "-next" if replacement else ""
    return f"byok-{location_code}-{region}{suffix}.template.json"
