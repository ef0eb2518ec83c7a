"""BYOK connections to a customer's AWS account, their regional keys, setup requests and the
encrypted app data that depends on them."""

import secrets

from django.conf import settings
from django.db import models

from keys.locations import LOCATION_CHOICES, get_location


def new_external_id() -> str:
    # Unguessable and per-organization: the confused-deputy guard in the role's trust policy.
    return f"byok-{secrets.token_hex(16)}"


class ConnectionState(models.TextChoices):
    PENDING = "pending", "Pending"
    ACTIVE = "active", "Active"
    DEGRADED = "degraded", "Degraded"
    REVOKED = "revoked", "Revoked"
    RESTORING = "restoring", "Restoring"
    EXPIRED = "expired", "Expired"
    REENCRYPTING = "re-encrypting", "Re-encrypting"


class ByokConnection(models.Model):
    """An organization's link to its AWS account: the role the vendor assumes and its keys."""

    organization = models.OneToOneField(
        "orgs.Organization", on_delete=models.PROTECT, related_name="byok_connection"
    )
    aws_account_id = models.CharField(max_length=12)
    location = models.CharField(max_length=10, choices=LOCATION_CHOICES)
    role_name = models.CharField(max_length=64, default="byok-key-management")
    external_id = models.CharField(
        max_length=64, unique=True, default=new_external_id, editable=False
    )
    state = models.CharField(
        max_length=20, choices=ConnectionState.choices, default=ConnectionState.PENDING
    )
    state_reason = models.CharField(max_length=500, blank=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    restore_deadline = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    transient_failures = models.PositiveIntegerField(default=0)
    restore_checks = models.JSONField(
        default=list, blank=True, help_text="The last restore verification: one entry per check."
    )
    customer_side = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the monitor last saw of the customer's revocation steps, per region.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [
            ("run_health_check", "Can run a health check of a BYOK connection"),
            ("resend_notification", "Can resend a BYOK notice to the organization's admins"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(aws_account_id__regex=r"^[0-9]{12}$"),
                name="connection_account_12_digits",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization} → {self.aws_account_id} ({self.get_state_display()})"

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.aws_account_id}:role/{self.role_name}"

    @property
    def location_info(self):
        return get_location(self.location)


class RegionalKey(models.Model):
    """One symmetric KMS key in one region of the connection's location."""

    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Not checked yet"
        ENABLED = "enabled", "Enabled"
        DISABLED = "disabled", "Disabled"
        PENDING_DELETION = "pending-deletion", "Pending deletion"
        NOT_FOUND = "not-found", "Not found"
        ACCESS_DENIED = "access-denied", "Access denied"
        UNREACHABLE = "unreachable", "Unreachable"

    connection = models.ForeignKey(ByokConnection, on_delete=models.PROTECT, related_name="keys")
    region = models.CharField(max_length=30)
    key_arn = models.CharField(max_length=300)
    alias = models.CharField(max_length=256, blank=True)
    generation = models.PositiveIntegerField(default=1)
    is_current = models.BooleanField(default=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UNKNOWN)
    status_detail = models.CharField(max_length=500, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["connection", "-generation", "region"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "region"],
                condition=models.Q(is_current=True),
                name="regionalkey_one_current_per_region",
            ),
        ]

    def __str__(self) -> str:
        return self.key_arn


class SetupRequest(models.Model):
    class Status(models.TextChoices):
        SUBMITTED = "submitted", "Submitted"
        CLAIMED = "claimed", "In review"
        PROVISIONED = "provisioned", "Provisioned"
        REJECTED = "rejected", "Rejected"

    OPEN_STATUSES = (Status.SUBMITTED, Status.CLAIMED)

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="setup_requests"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    aws_account_id = models.CharField(max_length=12)
    site_name = models.CharField(max_length=63)
    location = models.CharField(max_length=10, choices=LOCATION_CHOICES)
    apps = models.JSONField(help_text="App codes to provision with BYOK: jira, confluence, jsm.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SUBMITTED)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="assigned_setup_requests",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "location", "created_at"])]
        permissions = [
            ("process_setuprequest", "Can claim, provision and reject setup requests"),
            ("run_preflight", "Can run a preflight check of a customer's AWS side"),
        ]

    def __str__(self) -> str:
        return f"Setup request #{self.pk} — {self.organization} / {self.site_name}"

    @property
    def location_info(self):
        return get_location(self.location)

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class RequestEvent(models.Model):
    """One line of a request's timeline (customer-visible unless ``internal``)."""

    request = models.ForeignKey(SetupRequest, on_delete=models.CASCADE, related_name="timeline")
    kind = models.CharField(max_length=30)
    message = models.TextField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    internal = models.BooleanField(default=False, help_text="Internal notes: vendor staff only.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"


class PreflightRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"

    request = models.ForeignKey(SetupRequest, on_delete=models.CASCADE, related_name="preflights")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    checks = models.JSONField(
        default=list, help_text="[{name, region, passed, detail, remediation}]"
    )
    key_arns = models.JSONField(default=dict, help_text="Region → key ARN found by alias.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Preflight #{self.pk} of request #{self.request_id}: {self.status}"


class DataKey(models.Model):
    """A data key (DEK) of one BYOK app instance. Only its KMS-wrapped forms are stored."""

    app_instance = models.ForeignKey(
        "orgs.AppInstance", on_delete=models.PROTECT, related_name="data_keys"
    )
    encryption_context = models.JSONField(help_text="KMS encryption context: org, site, app.")
    is_current = models.BooleanField(
        default=True, help_text="New records of the app are written under the current key."
    )
    destroyed_at = models.DateTimeField(
        null=True, blank=True, help_text="Wrapped forms erased: data under it is unrecoverable."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["app_instance"],
                condition=models.Q(is_current=True),
                name="datakey_one_current_per_app",
            ),
        ]

    def __str__(self) -> str:
        return f"Data key #{self.pk} of {self.app_instance_id}"


class DataKeyWrapping(models.Model):
    """A DEK wrapped (encrypted) under one regional KMS key."""

    data_key = models.ForeignKey(DataKey, on_delete=models.CASCADE, related_name="wrappings")
    regional_key = models.ForeignKey(RegionalKey, on_delete=models.PROTECT, related_name="+")
    region = models.CharField(max_length=30)
    blob = models.BinaryField(help_text="KMS ciphertext of the DEK. Useless without the KMS key.")
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["data_key", "region"]

    def __str__(self) -> str:
        return f"DEK #{self.data_key_id} under {self.region}"


class AppRecord(models.Model):
    """One piece of app data (issue, comment, page …), stored only as AES-256-GCM ciphertext."""

    class Kind(models.TextChoices):
        ISSUE = "issue", "Issue"
        COMMENT = "comment", "Comment"
        ATTACHMENT = "attachment", "Attachment"
        PAGE = "page", "Page"
        BLOG = "blog", "Blog post"
        WHITEBOARD = "whiteboard", "Whiteboard"
        ASSET = "asset", "Asset"

    app_instance = models.ForeignKey(
        "orgs.AppInstance", on_delete=models.PROTECT, related_name="records"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    data_key = models.ForeignKey(DataKey, on_delete=models.PROTECT, related_name="records")
    ciphertext = models.BinaryField()
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["app_instance", "id"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


class AppDataHealth(models.Model):
    """Per app instance: when data was last read successfully, and the last refusal."""

    app_instance = models.OneToOneField(
        "orgs.AppInstance", on_delete=models.CASCADE, related_name="data_health"
    )
    last_read_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_failure = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"Data health of {self.app_instance_id}"
