"""Preflight checks: verify a customer's AWS side before anything is provisioned.

The checks, in order (a region's first failure ends that region's checks; other regions
still run; checks that were not run are not listed — the report shows what was verified and
the one thing to fix next in each region):

``role``         the vendor can ``sts:AssumeRole`` into the customer's role with the org's
                 ExternalId (region ``""``: IAM is global). When it fails nothing else can run.
per region of the location:
``key-found``    ``DescribeKey`` finds a key by the alias (aliases are regional)
``key-region``   the key's ARN is in the region we asked
``key-state``    the key is not pending deletion (or otherwise unusable: pending import …)
``key-enabled``  the key is enabled
``key-type``     symmetric encryption key: key spec SYMMETRIC_DEFAULT, usage ENCRYPT_DECRYPT
``round-trip``   ``GenerateDataKey`` then ``Decrypt`` with the encryption context give back the
                 same data key (compared in constant time, then dropped: never logged/stored)
and, when the org has configured its CloudTrail source:
``trail-read``   the role may list the trail's prefix (``ListObjectsV2``) and read a log file
                 (``GetObject`` of the first one, closed unread), which the import needs

Every AWS call goes through ``connections.aws`` and is recorded as a key-usage audit event.
``run_preflight_checks`` never raises for AWS errors; failures are named causes with a
customer-actionable remediation. Throttling and unreachable endpoints (after botocore's own
retries, ``settings.AWS_MAX_ATTEMPTS``) are reported as *transient*: run it again later.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict, dataclass, field, fields

from django.conf import settings

from connections import aws
from connections.key_usage import recorder_for, role_name_of
from core.locations import get_location
from review.models import CheckRun
from review.services import CAUSE_TIMED_OUT  # noqa: F401 (a cause, listed with the others)

# Check names, in the order they run.
ROLE = "role"
KEY_FOUND = "key-found"
KEY_REGION = "key-region"
KEY_STATE = "key-state"
KEY_ENABLED = "key-enabled"
KEY_TYPE = "key-type"
ROUND_TRIP = "round-trip"
TRAIL_READ = "trail-read"
CONNECTION = "connection"

CHECK_LABELS = {
    CONNECTION: "AWS connection on record",
    ROLE: "Vendor can assume your IAM role",
    KEY_FOUND: "Key found by its alias",
    KEY_REGION: "Key lives in this region",
    KEY_STATE: "Key is not pending deletion",
    KEY_ENABLED: "Key is enabled",
    KEY_TYPE: "Key is a symmetric encryption key",
    ROUND_TRIP: "Encrypt and decrypt round trip",
    TRAIL_READ: "Role can read your CloudTrail log files",
    # Re-encryption preflights (reencryption.services.preflight) add these.
    "key-account": "Key is in your connected AWS account",
    "key-new": "Key is not one of your current keys",
    "re-encrypt": "Data keys re-wrap from the current key to the new one",
}

# Failure causes (``Check.cause``). AWS-side ones reuse ``connections.aws`` cause names.
CAUSE_ROLE = aws.RoleUnavailable.cause
CAUSE_NOT_FOUND = aws.KeyNotFound.cause
CAUSE_DISABLED = aws.KeyDisabled.cause
CAUSE_INVALID_STATE = aws.KeyInvalidState.cause
CAUSE_ACCESS = aws.AccessDenied.cause
CAUSE_THROTTLED = aws.Throttled.cause
CAUSE_UNREACHABLE = aws.Unreachable.cause
CAUSE_PENDING_DELETION = "key-pending-deletion"
CAUSE_WRONG_TYPE = "wrong-key-type"
CAUSE_WRONG_REGION = "wrong-region"
CAUSE_MISMATCH = "round-trip-mismatch"
CAUSE_NO_CONNECTION = "no-connection"
CAUSE_INTERNAL = "internal-error"
CAUSE_NO_TRAIL_BUCKET = "trail-bucket-not-found"

TRANSIENT_CAUSES = frozenset({CAUSE_THROTTLED, CAUSE_UNREACHABLE})

THROTTLED_REMEDIATION = (
    "AWS throttled our requests; this is temporary — run the preflight again in a few minutes."
)


# --- Report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    region: str
    passed: bool
    detail: str
    remediation: str
    cause: str = ""

    @property
    def label(self) -> str:
        return CHECK_LABELS.get(self.name, self.name)

    @property
    def transient(self) -> bool:
        return not self.passed and self.cause in TRANSIENT_CAUSES

    def to_dict(self) -> dict:
        # ``label`` is for display only; from_dict ignores it.
        return {**asdict(self), "label": self.label}

    @classmethod
    def from_dict(cls, data: dict) -> Check:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)
    key_arns: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def transient(self) -> bool:
        """Failed, and only because AWS throttled us or did not answer: run it again later."""
        failures = self.failures
        return bool(failures) and all(c.transient for c in failures)

    def summary(self) -> str:
        if self.passed:
            regions = sorted({c.region for c in self.checks if c.region})
            return f"Preflight passed: all {len(self.checks)} checks succeeded" + (
                f" ({', '.join(regions)})." if regions else "."
            )
        lines = ["Preflight failed" + (" (temporary AWS problem)" if self.transient else "") + ":"]
        for check in self.failures:
            where = f"{check.region}: " if check.region else ""
            lines.append(f"- {where}{check.detail} {check.remediation}".rstrip())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"checks": [c.to_dict() for c in self.checks], "key_arns": dict(self.key_arns)}

    @classmethod
    def from_dict(cls, data: dict) -> PreflightReport:
        return cls(
            checks=[Check.from_dict(c) for c in data.get("checks") or []],
            key_arns=dict(data.get("key_arns") or {}),
        )

    @classmethod
    def from_run(cls, run: CheckRun) -> PreflightReport:
        return cls.from_dict({"checks": run.checks, "key_arns": run.key_arns})


# --- The checks ---------------------------------------------------------------------------


def run_preflight_checks(
    *,
    org,
    role_arn: str,
    external_id: str,
    location_code: str,
    alias: str,
    encryption_context: dict,
    key_ids: dict[str, str] | None = None,
    trail: TrailLocation | None = None,
) -> PreflightReport:
    """Assume the customer's role, then check the key of every region of the location, and
    the role's read access to the customer's CloudTrail when ``trail`` is given.

    Each region's key is looked up by ``alias``, or by ``key_ids[region]`` (a key ARN, for
    re-encryption requests that name their new keys) when given.

    Never raises for AWS errors: each one becomes a failed check with its named cause.
    """
    location = get_location(location_code)
    report = PreflightReport()
    role_name = role_name_of(role_arn) or role_arn
    try:
        session = aws.assume_customer_role(
            role_arn=role_arn, external_id=external_id, cached=False, on_call=recorder_for(org)
        )
    except aws.AwsError as err:
        report.checks.append(_role_failure(err, role_name=role_name, external_id=external_id))
        return report
    report.checks.append(
        Check(ROLE, "", True, f"Assumed the role {role_arn} with your external ID.", "")
    )
    for region in location.regions:
        checks, key_arn = _check_region(
            session,
            region=region,
            alias=(key_ids or {}).get(region) or alias,
            context=encryption_context,
            role_name=role_name,
        )
        report.checks.extend(checks)
        if key_arn:
            report.key_arns[region] = key_arn
    if trail is not None:
        report.checks.append(_check_trail(session, trail, role_name=role_name))
    return report


@dataclass(frozen=True)
class TrailLocation:
    """Where the org's CloudTrail writes its log files (its configured source)."""

    bucket: str
    prefix: str
    region: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _check_trail(session: aws.CustomerSession, trail: TrailLocation, *, role_name: str) -> Check:
    """List the trail's prefix and open its first log file: what every import does."""
    region = trail.region
    remediation = (
        f"Give the role {role_name} s3:ListBucket on the bucket {trail.bucket} and s3:GetObject "
        f"on {trail.url}*: redeploy the onboarding kit's role template with its TrailBucketName "
        "parameter, or add the inline policy shown on the audit integrations page."
    )
    try:
        first = next(iter(session.list_objects(region, trail.bucket, trail.prefix)), None)
    except aws.AwsError as err:
        return _trail_failure(err, trail=trail, action="list", remediation=remediation)
    if first is None:
        return Check(
            TRAIL_READ,
            region,
            True,
            f"The role may list {trail.url}; it holds no log files yet, so reading one is "
            "checked by the first import.",
            "",
        )
    try:
        session.get_object(region, trail.bucket, first.key, max_bytes=0)
    except (aws.ObjectTooLarge, aws.ObjectNotFound):
        pass  # opened (then closed unread), or deleted since the listing: reading is allowed
    except aws.AwsError as err:
        return _trail_failure(err, trail=trail, action="read", remediation=remediation)
    return Check(
        TRAIL_READ,
        region,
        True,
        f"The role may list {trail.url} and read its log files.",
        "",
    )


def _trail_failure(
    err: aws.AwsError, *, trail: TrailLocation, action: str, remediation: str
) -> Check:
    region = trail.region
    if err.transient:
        return _transient_failure(TRAIL_READ, err, region=region, service="Amazon S3")
    said = _aws_said(err)
    if isinstance(err, aws.ObjectNotFound):
        return Check(
            TRAIL_READ,
            region,
            False,
            f"The bucket {trail.bucket} was not found in {region}{said}",
            "Check the bucket name and region of your CloudTrail source on the audit "
            "integrations page.",
            CAUSE_NO_TRAIL_BUCKET,
        )
    what = "list" if action == "list" else "read the log files in"
    return Check(
        TRAIL_READ,
        region,
        False,
        f"The role may not {what} {trail.url}{said}",
        remediation,
        CAUSE_ACCESS if isinstance(err, aws.AccessDenied) else err.cause,
    )


def _check_region(
    session: aws.CustomerSession, *, region: str, alias: str, context: dict, role_name: str
) -> tuple[list[Check], str]:
    """The checks of one region, stopping at the first failure; and the key ARN if found."""
    checks: list[Check] = []

    def ok(name: str, detail: str) -> None:
        checks.append(Check(name, region, True, detail, ""))

    def fail(name: str, cause: str, detail: str, remediation: str) -> tuple[list[Check], str]:
        checks.append(Check(name, region, False, detail, remediation, cause))
        return checks, key_arn

    key_arn = ""
    try:
        key = session.describe_key(region, alias)
    except aws.AwsError as err:
        checks.append(_aws_failure(KEY_FOUND, err, region=region, alias=alias, role=role_name))
        return checks, key_arn
    key_arn = key.arn
    if alias.startswith("alias/"):
        ok(KEY_FOUND, f"The alias {alias} points to the key {key.arn}.")
    else:
        ok(KEY_FOUND, f"The key {key.arn} exists and the role can describe it.")

    if key.region != region:
        return fail(
            KEY_REGION,
            CAUSE_WRONG_REGION,
            f"The alias {alias} in {region} resolves to a key in {key.region}, not in {region}.",
            f"Create a key in {region} and point the alias {alias} in {region} to it: "
            "each region of the location needs its own key.",
        )
    ok(KEY_REGION, f"The key is in {region}.")

    if key.state in ("PendingDeletion", "PendingReplicaDeletion"):
        return fail(
            KEY_STATE,
            CAUSE_PENDING_DELETION,
            f"The key {key.arn} is scheduled for deletion.",
            "Cancel the key's scheduled deletion (aws kms cancel-key-deletion "
            f"--key-id {key.key_id} --region {region}), enable it, and run the preflight again.",
        )
    if key.state not in ("Enabled", "Disabled"):
        return fail(
            KEY_STATE,
            CAUSE_INVALID_STATE,
            f"The key {key.arn} is in the state {key.state or 'unknown'}, so it cannot be used.",
            "Bring the key to the Enabled state (for an imported key, import its key material; "
            "for a custom key store, reconnect it), then run the preflight again.",
        )
    ok(KEY_STATE, "The key is not pending deletion.")

    if not key.enabled or key.state == "Disabled":
        return fail(
            KEY_ENABLED,
            CAUSE_DISABLED,
            f"The key {key.arn} is disabled.",
            f"Enable the key (aws kms enable-key --key-id {key.key_id} --region {region}) "
            "and run the preflight again.",
        )
    ok(KEY_ENABLED, "The key is enabled.")

    if not key.is_symmetric_encrypt_decrypt:
        return fail(
            KEY_TYPE,
            CAUSE_WRONG_TYPE,
            f"The key is a {key.spec or 'unknown'} key for {key.usage or 'unknown use'}; "
            "BYOK needs a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT).",
            f"Create a symmetric encryption key in {region} (key spec SYMMETRIC_DEFAULT, "
            f"usage ENCRYPT_DECRYPT) and move the alias {alias} to it.",
        )
    ok(KEY_TYPE, "The key is a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT).")

    try:
        matches = _round_trip(session, region=region, key_arn=key.arn, context=context)
    except aws.AwsError as err:
        checks.append(_aws_failure(ROUND_TRIP, err, region=region, alias=alias, role=role_name))
        return checks, key_arn
    if not matches:
        return fail(
            ROUND_TRIP,
            CAUSE_MISMATCH,
            "Decrypting a freshly generated data key did not give back the same key.",
            "Run the preflight again; if it fails again, contact support with this "
            "preflight's number.",
        )
    ok(
        ROUND_TRIP,
        "GenerateDataKey and Decrypt with the encryption context "
        f"({', '.join(sorted(context))}) worked with this key.",
    )
    return checks, key_arn


def _round_trip(session: aws.CustomerSession, *, region: str, key_arn: str, context: dict) -> bool:
    """GenerateDataKey + Decrypt; True when the same data key comes back. Keys are dropped here."""
    plaintext = recovered = blob = None
    try:
        plaintext, blob, _ = session.generate_data_key(region, key_arn, context)
        recovered = session.decrypt(region, key_arn, blob, context)
        return hmac.compare_digest(plaintext, recovered)
    finally:
        # Python cannot wipe bytes; drop the only references at once so nothing keeps them.
        del plaintext, recovered, blob


def _role_failure(err: aws.AwsError, *, role_name: str, external_id: str) -> Check:
    if err.transient:
        return _transient_failure(ROLE, err, region="", service="AWS STS")
    detail = f"We could not assume the role {role_name}{_aws_said(err)}"
    if isinstance(err, aws.RoleUnavailable | aws.AccessDenied):
        return Check(
            ROLE,
            "",
            False,
            detail,
            f"Create the IAM role {role_name} from the onboarding kit, or check its trust policy "
            f"allows {settings.VENDOR_PRINCIPAL_ARN} with external ID {external_id}.",
            CAUSE_ROLE,
        )
    # Not a refusal by the customer's account (a malformed request, our own credentials …).
    return Check(
        ROLE,
        "",
        False,
        detail,
        "Run the preflight again; if it fails again, contact support with this preflight's number.",
        err.cause,
    )


def _aws_failure(name: str, err: aws.AwsError, *, region: str, alias: str, role: str) -> Check:
    """A failed KMS call of one region's checks, as a check with a named cause."""
    if err.transient:
        return _transient_failure(name, err, region=region, service="AWS KMS")
    said = _aws_said(err)
    if isinstance(err, aws.KeyNotFound):
        return Check(
            name,
            region,
            False,
            f"No key with the alias {alias} was found in {region}{said}",
            f"Create a symmetric encryption key in {region} and give it the alias {alias} "
            "(the onboarding kit does both).",
            CAUSE_NOT_FOUND,
        )
    if isinstance(err, aws.AccessDenied):
        return Check(
            name,
            region,
            False,
            f"The role {role} may not use the key {alias} in {region}{said}",
            f"Update the key policy of {alias} in {region} so the role {role} may call "
            "kms:DescribeKey, kms:GenerateDataKey and kms:Decrypt (see the onboarding kit).",
            CAUSE_ACCESS,
        )
    if isinstance(err, aws.KeyDisabled):
        return Check(
            name,
            region,
            False,
            f"The key {alias} in {region} is disabled{said}",
            f"Enable the key {alias} in {region} and run the preflight again.",
            CAUSE_DISABLED,
        )
    if isinstance(err, aws.KeyInvalidState):
        return Check(
            name,
            region,
            False,
            f"The key {alias} in {region} cannot be used in its current state{said}",
            f"Make sure the key {alias} in {region} is enabled and not pending deletion, "
            "then run the preflight again.",
            CAUSE_INVALID_STATE,
        )
    return Check(
        name,
        region,
        False,
        f"AWS refused the request in {region}{said}",
        f"Check that {alias} in {region} is a symmetric encryption key the role {role} may use, "
        "then run the preflight again; if it fails again, contact support with this "
        "preflight's number.",
        err.cause,
    )


def _transient_failure(name: str, err: aws.AwsError, *, region: str, service: str) -> Check:
    where = f" in {region}" if region else ""
    if isinstance(err, aws.Throttled):
        detail = f"{service}{where} throttled our requests after {_attempts()}{_aws_said(err)}"
        return Check(name, region, False, detail, THROTTLED_REMEDIATION, CAUSE_THROTTLED)
    detail = f"{service}{where} did not answer after {_attempts()}{_aws_said(err)}"
    return Check(
        name,
        region,
        False,
        detail,
        "This is usually temporary — run the preflight again in a few minutes; if it persists, "
        f"check the AWS Health Dashboard for {service}{where}.",
        CAUSE_UNREACHABLE,
    )


def _attempts() -> str:
    n = settings.AWS_MAX_ATTEMPTS
    return f"{n} attempt{'s' if n != 1 else ''}"


def _aws_said(err: aws.AwsError) -> str:
    """`` (AWS: Code — message).`` on one short line: never a stack trace."""
    message = " ".join((err.message or "").split())[:200]
    code = err.code or type(err).__name__
    if message and message != code:
        return f" (AWS: {code} — {message})."
    return f" (AWS: {code})."
