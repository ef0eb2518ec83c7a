"""Acme Corp's BYOK side of the demo: keys in the local moto "AWS", a BYOK site, sample data.

moto keeps its state in memory, so after a restart of ``make run`` the keys named in the
database are gone; the demo then rebuilds Acme's BYOK side (old sample data under the vanished
keys is unrecoverable, exactly as it would be in AWS).
"""

import json

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connections import aws
from connections.models import ByokConnection, ConnectionState, DataKey, RegionalKey
from dataplane.models import AppRecord
from dataplane.records import store_record
from demo import customer_side
from orgs.models import AppInstance, Organization, Site, User
from reencryption.models import ReencryptionJob, ReencryptionRequest
from setup.models import SetupRequest
from setup.onboarding import REPLACEMENT_KEY_ALIAS

ACME_AWS_ACCOUNT = "222233334444"
ACME_SITE = "acme-secure"
ACME_LOCATION = "us"

SAMPLE_ISSUES = [
    ("SEC-1", "Rotate the TLS certificates of the payment gateway", "Expires on the 30th."),
    ("SEC-2", "Review S3 bucket policies", "Two buckets allow public listing."),
    ("OPS-7", "Quarterly disaster-recovery drill", "Fail over to us-west-2 on Saturday."),
    ("OPS-9", "Customer PII export for the auditors", "Only the fields in appendix B."),
]
SAMPLE_PAGES = [
    ("Incident runbook", "Page the on-call, open a bridge, write the timeline as you go."),
    ("Key management policy", "Keys live in the security account; rotation is yearly."),
    ("Board meeting notes", "Acquisition of Initech discussed; confidential until announced."),
]


def aws_available() -> bool:
    """A moto server (``AWS_ENDPOINT_URL``) or moto in-process (tests' ``mock_aws``)."""
    if settings.AWS_ENDPOINT_URL:
        return True
    try:
        from moto.core.models import MockAWS
    except ImportError:  # pragma: no cover — moto is a dev dependency
        return False
    return MockAWS._nested_count > 0


def _keys_still_exist(connection: ByokConnection) -> bool:
    keys = list(connection.keys.filter(is_current=True))
    if not keys:
        return False
    try:
        session = aws.assume_customer_role(
            role_arn=connection.role_arn, external_id=connection.external_id, cached=False
        )
        return all(session.describe_key(k.region, k.key_arn).state for k in keys)
    except aws.AwsError:
        return False


def _forget_acme_byok(org: Organization) -> None:
    """Drop BYOK objects that point at keys moto no longer has (demo only)."""
    apps = AppInstance.objects.filter(site__organization=org, site__name=ACME_SITE)
    AppRecord.objects.filter(app_instance__in=apps).delete()
    DataKey.objects.filter(app_instance__in=apps).delete()
    apps.delete()
    Site.objects.filter(name=ACME_SITE).delete()
    # Re-encryptions of the vanished keys (PROTECTed: their jobs first).
    ReencryptionJob.objects.filter(request__organization=org).delete()
    ReencryptionRequest.objects.filter(organization=org).delete()
    RegionalKey.objects.filter(connection__organization=org).delete()
    SetupRequest.objects.filter(organization=org).delete()
    ByokConnection.objects.filter(organization=org).delete()


def connect_active_keys(*, org, account_id: str, location: str, provisioned_by: str):
    """An active BYOK connection for ``org`` and its keys in the customer's (simulated) AWS
    account, what setup would leave behind (for the demo and the benchmarks):
    ``(connection, {region: key ARN})``."""
    connection = ByokConnection.objects.create(
        organization=org,
        aws_account_id=account_id,
        location=location,
        role_name=settings.BYOK_ROLE_NAME,
        state=ConnectionState.ACTIVE,
        state_reason=f"Provisioned ({provisioned_by}).",
        state_changed_at=timezone.now(),
    )
    key_arns = customer_side.create_customer_side(
        account_id=account_id,
        location_code=location,
        external_id=connection.external_id,
        vendor_principal_arn=settings.VENDOR_PRINCIPAL_ARN,
    )
    with transaction.atomic():
        for region, arn in key_arns.items():
            RegionalKey.objects.create(
                connection=connection,
                region=region,
                key_arn=arn,
                alias="alias/byok-key-management",
                status=RegionalKey.Status.ENABLED,
                last_checked_at=timezone.now(),
            )
    return connection, key_arns


def seed_demo_byok() -> str:
    if not aws_available():
        return "Acme's BYOK site: skipped (no AWS_ENDPOINT_URL: start the moto server first)."
    org = Organization.objects.get(name="Acme Corp")
    connection = ByokConnection.objects.filter(organization=org).first()
    seeded = AppRecord.objects.filter(app_instance__site__name=ACME_SITE).exists()
    if connection is not None and seeded and _keys_still_exist(connection):
        return f"Acme's BYOK site {ACME_SITE}: already set up."
    with transaction.atomic():
        _forget_acme_byok(org)
    connection, key_arns = connect_active_keys(
        org=org, account_id=ACME_AWS_ACCOUNT, location=ACME_LOCATION, provisioned_by="demo"
    )
    with transaction.atomic():
        site = Site.objects.create(organization=org, name=ACME_SITE)
        apps = {
            app: AppInstance.objects.create(
                site=site,
                app=app,
                encryption=AppInstance.Encryption.BYOK,
                status=AppInstance.Status.ACTIVE,
            )
            for app in ("jira", "confluence")
        }
        admin = User.objects.get(email="admin@acme.example")
        SetupRequest.objects.create(
            organization=org,
            requested_by=admin,
            aws_account_id=ACME_AWS_ACCOUNT,
            site_name=ACME_SITE,
            location=ACME_LOCATION,
            apps=["confluence", "jira"],
            status=SetupRequest.Status.PROVISIONED,
            closed_at=timezone.now(),
        )
    for key, summary, description in SAMPLE_ISSUES:
        body = {"key": key, "summary": summary, "description": description}
        store_record(app_instance=apps["jira"], kind="issue", plaintext=json.dumps(body).encode())
    for title, text in SAMPLE_PAGES:
        body = {"title": title, "body": text}
        store_record(
            app_instance=apps["confluence"], kind="page", plaintext=json.dumps(body).encode()
        )
    return (
        f"Acme's BYOK site {ACME_SITE}: keys in AWS account {ACME_AWS_ACCOUNT} "
        f"({', '.join(key_arns)}), "
        f"{len(SAMPLE_ISSUES)} issues and {len(SAMPLE_PAGES)} pages encrypted."
    )


def seed_demo_replacement_keys() -> str:
    """Acme deploys the replacement-keys template (alias ``REPLACEMENT_KEY_ALIAS``), so a
    re-encryption requested in the demo passes its preflight. Idempotent.

    After a re-encryption the replacement keys are Acme's keys in use; the customer then
    deploys the template again for the next rotation: a new key per region, and the alias
    moved to it (the stack of the first deployment keeps the keys now in use).
    """
    if not aws_available():
        return "Acme's replacement keys: skipped (no AWS_ENDPOINT_URL)."
    connection = ByokConnection.objects.filter(organization__name="Acme Corp").first()
    if connection is None or not connection.keys.filter(is_current=True).exists():
        return "Acme's replacement keys: skipped (Acme has no BYOK keys)."
    key_arns = customer_side.create_customer_side(
        account_id=connection.aws_account_id,
        location_code=connection.location,
        external_id=connection.external_id,
        vendor_principal_arn=settings.VENDOR_PRINCIPAL_ARN,
        alias=REPLACEMENT_KEY_ALIAS,
    )
    in_use = set(
        RegionalKey.objects.filter(connection=connection).values_list("key_arn", flat=True)
    )
    for region, arn in list(key_arns.items()):
        if arn in in_use:
            # Moved by an earlier seed (the stack's output still names the first key)?
            target = customer_side.alias_target(
                account_id=connection.aws_account_id, region=region, alias=REPLACEMENT_KEY_ALIAS
            )
            if target not in in_use:
                key_arns[region] = target
                continue
            key_arns[region] = customer_side.rotate_alias_to_new_key(
                account_id=connection.aws_account_id,
                region=region,
                alias=REPLACEMENT_KEY_ALIAS,
                template_key_arn=arn,
            )
    return (
        f"Acme's replacement keys ({REPLACEMENT_KEY_ALIAS}): "
        + ", ".join(f"{r} {a.rsplit('/', 1)[-1]}" for r, a in key_arns.items())
        + " (a re-encryption's preflight passes)."
    )
