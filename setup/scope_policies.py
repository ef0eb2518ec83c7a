"""Customer-side scoped revocation: key-policy ``Deny`` statements for one site or one app.

Every KMS call the vendor makes for an app carries the encryption context
``{"org": <org id>, "site": <site name>, "app": <app>}`` (data keys are generated, wrapped and
unwrapped with it). A key-policy statement that denies the vendor's role the cryptographic
operations when ``kms:EncryptionContext:site`` (and ``…:app``) match therefore takes exactly
that site or app away, in AWS, without the portal and without touching any other scope:

* ``Deny`` beats every ``Allow`` in AWS's policy evaluation, so adding the statement is enough;
  removing it gives the scope back (then restore it in the portal: the same checks run first).
* ``kms:DescribeKey`` is *not* denied: the key stays visible to the vendor, which is how the
  portal tells a scoped denial (described fine, context denied) from a revoked key.
* The portal's health monitor probes each app with its own context every minute and suspends
  exactly the scope AWS denies, shown as a customer-side revocation on the BYOK page.

Pure functions, like :mod:`setup.onboarding`; the kit page shows them per site and app, and the
same statements go into every region's key policy.
"""

from __future__ import annotations

import json
import re
from typing import Any

from setup.onboarding import KEY_ALIAS, key_policy

#: The operations that carry an encryption context (DescribeKey stays allowed, see above).
DENIED_ACTIONS: tuple[str, ...] = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
)


def _sid(*parts: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", " ".join(parts))
    return "ByokRevoke" + "".join(w[:1].upper() + w[1:] for w in words if w)


def scope_deny_statement(
    *, role_arn: str, org_id: int, site: str, app: str | None = None
) -> dict[str, Any]:
    """A key-policy statement denying the vendor's role one site (or one app of it)."""
    condition = {
        "kms:EncryptionContext:org": str(org_id),
        "kms:EncryptionContext:site": site,
    }
    if app is not None:
        condition["kms:EncryptionContext:app"] = app
    return {
        "Sid": _sid("site", site, *(["app", app] if app else [])),
        "Effect": "Deny",
        "Principal": {"AWS": role_arn},
        "Action": list(DENIED_ACTIONS),
        "Resource": "*",
        "Condition": {"StringEquals": condition},
    }


def key_policy_with_denies(
    *, account_id: str, role_arn: str, denies: list[dict[str, Any]]
) -> dict[str, Any]:
    """The kit's key policy with these ``Deny`` statements added (to put as a whole)."""
    policy = key_policy(account_id=account_id, role_arn=role_arn)
    policy["Statement"] = [*policy["Statement"], *denies]
    return policy


def scope_denies_for(*, role_arn: str, org_id: int, sites: dict[str, list[str]]) -> list[dict]:
    """For the kit page: each site and each of its BYOK apps, with its statement as JSON.

    ``sites``: site name → its BYOK apps (``jira`` …)."""
    entries = []
    for site, apps in sorted(sites.items()):
        statement = scope_deny_statement(role_arn=role_arn, org_id=org_id, site=site)
        entries.append({"scope": f"site {site}", "json": json.dumps(statement, indent=2)})
        for app in sorted(apps):
            statement = scope_deny_statement(role_arn=role_arn, org_id=org_id, site=site, app=app)
            entries.append({"scope": f"{app} on {site}", "json": json.dumps(statement, indent=2)})
    return entries


def put_key_policy_command(*, region: str) -> str:
    """The CLI command applying an edited key policy (saved as ``key-policy.json``) to the
    kit's key of one region (``put-key-policy`` takes a key id, not an alias)."""
    key = (
        f"$(aws kms describe-key --region {region} --key-id {KEY_ALIAS} "
        "--query KeyMetadata.KeyId --output text)"
    )
    return (
        f"aws kms put-key-policy --region {region} --key-id {key} "
        "--policy-name default --policy file://key-policy.json"
    )
