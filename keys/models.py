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
        constraints = [
            # Re-encryption adds a wrapping per new key; a retried batch must not add a second.
            models.UniqueConstraint(
                fields=["data_key", "regional_key"], name="datakeywrapping_one_per_key"
            ),
        ]

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


# --- Re-encryption under new keys (keys/reencryption.py, keys/reencryption_job.py) ---------


class ReencryptionMode(models.TextChoices):
    REWRAP = "rewrap", "Re-wrap data keys"
    ROTATE = "rotate", "Full rotation"


class ReencryptionRequest(models.Model):
    """An org admin's request to move the org's BYOK data to new KMS keys."""

    class Status(models.TextChoices):
        SUBMITTED = "submitted", "Submitted"
        CLAIMED = "claimed", "In review"
        APPROVED = "approved", "Approved"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"

    class KeySource(models.TextChoices):
        ALIAS = "alias", "By the replacement alias"
        ARNS = "arns", "By key ARN"

    OPEN_STATUSES = (Status.SUBMITTED, Status.CLAIMED, Status.APPROVED)

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="reencryption_requests"
    )
    connection = models.ForeignKey(
        ByokConnection, on_delete=models.PROTECT, related_name="reencryption_requests"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    mode = models.CharField(
        max_length=10, choices=ReencryptionMode.choices, default=ReencryptionMode.REWRAP
    )
    key_source = models.CharField(max_length=10, choices=KeySource.choices, default=KeySource.ALIAS)
    key_alias = models.CharField(max_length=256, blank=True)
    requested_key_arns = models.JSONField(
        default=dict, blank=True, help_text="Region → key ARN, as the admin entered them."
    )
    key_arns = models.JSONField(
        default=dict,
        blank=True,
        help_text="Region → key ARN, pinned at approval from the passing preflight.",
    )
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="Start of the maintenance window; empty: when approved."
    )
    window_timezone = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SUBMITTED)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="assigned_reencryption_requests",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization"],
                condition=models.Q(status__in=["submitted", "claimed", "approved"]),
                name="reencryption_one_open_request_per_org",
            ),
        ]
        permissions = [
            (
                "process_reencryptionrequest",
                "Can claim, preflight, approve and reject re-encryption requests",
            ),
        ]

    def __str__(self) -> str:
        return f"Re-encryption request #{self.pk} — {self.organization}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class ReencryptionPreflight(models.Model):
    """A preflight of the new keys of a re-encryption request (same checks as setup, plus
    "the key is new" and a ReEncrypt from the current key to the new one)."""

    request = models.ForeignKey(
        ReencryptionRequest, on_delete=models.CASCADE, related_name="preflights"
    )
    status = models.CharField(
        max_length=10, choices=PreflightRun.Status.choices, default=PreflightRun.Status.QUEUED
    )
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    checks = models.JSONField(default=list)
    key_arns = models.JSONField(default=dict, help_text="Region → key ARN found.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Re-encryption preflight #{self.pk}: {self.status}"


class ReencryptionJob(models.Model):
    """The background job of an approved request: its checkpoint and progress live here."""

    class State(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Phase(models.TextChoices):
        WAITING = "waiting", "Waiting to start"
        REWRAP = "rewrap", "Re-wrapping data keys"
        ROTATE = "rotate", "Re-encrypting records"
        VERIFY = "verify", "Verifying every record"
        RETIRE = "retire", "Retiring the old keys"
        DONE = "done", "Done"

    ACTIVE_STATES = (State.SCHEDULED, State.RUNNING, State.PAUSED)
    FINISHED_STATES = (State.COMPLETED, State.FAILED, State.CANCELLED)

    request = models.OneToOneField(
        ReencryptionRequest, on_delete=models.PROTECT, related_name="job"
    )
    connection = models.ForeignKey(
        ByokConnection, on_delete=models.PROTECT, related_name="reencryption_jobs"
    )
    mode = models.CharField(max_length=10, choices=ReencryptionMode.choices)
    state = models.CharField(max_length=20, choices=State.choices, default=State.SCHEDULED)
    phase = models.CharField(max_length=20, choices=Phase.choices, default=Phase.WAITING)
    state_reason = models.CharField(max_length=500, blank=True)
    scheduled_for = models.DateTimeField()
    batch_size = models.PositiveIntegerField()
    batch_interval_s = models.FloatField(
        default=0.0, help_text="Pause between batches: spares the customer's KMS request quota."
    )
    # Progress of the main phase (data keys when re-wrapping, records when rotating) …
    total = models.PositiveBigIntegerField(default=0)
    done = models.PositiveBigIntegerField(default=0)
    last_id = models.PositiveBigIntegerField(default=0, help_text="Checkpoint: last id done.")
    # … and of the verification pass (records).
    verify_total = models.PositiveBigIntegerField(default=0)
    verified = models.PositiveBigIntegerField(default=0)
    verify_last_id = models.PositiveBigIntegerField(default=0)
    record_count = models.PositiveBigIntegerField(default=0)
    dek_watermark = models.PositiveBigIntegerField(
        default=0, help_text="Highest data key id when the keys were switched."
    )
    record_watermark = models.PositiveBigIntegerField(
        default=0, help_text="Highest record id when the keys were switched."
    )
    new_keys = models.JSONField(default=dict, help_text="Region → RegionalKey id of the new key.")
    old_keys = models.JSONField(default=list, help_text="RegionalKey ids being replaced.")
    batches = models.PositiveIntegerField(default=0)
    rate = models.FloatField(
        default=0.0, help_text="Units per second of the current phase, recent batches."
    )
    kms_calls = models.PositiveBigIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=64, blank=True)
    lease_host = models.CharField(max_length=255, blank=True)
    lease_pid = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection"],
                condition=models.Q(state__in=["scheduled", "running", "paused"]),
                name="reencryptionjob_one_active_per_connection",
            ),
        ]

    def __str__(self) -> str:
        return f"Re-encryption job #{self.pk} ({self.state})"

    @property
    def unit(self) -> str:
        return "data keys" if self.mode == ReencryptionMode.REWRAP else "records"

    @property
    def percent(self) -> int:
        """Overall progress: the main phase is 80 %, verification 20 %."""
        if self.state == self.State.COMPLETED:
            return 100
        main = min(self.done / self.total, 1.0) if self.total else (1.0 if self.started_at else 0)
        if self.phase in (self.Phase.WAITING, self.Phase.REWRAP, self.Phase.ROTATE):
            return int(main * 80)
        verify = min(self.verified / self.verify_total, 1.0) if self.verify_total else 1.0
        return min(99, int(80 + verify * 20))

    @property
    def eta_seconds(self) -> float | None:
        if self.state != self.State.RUNNING or self.rate <= 0:
            return None
        if self.phase in (self.Phase.REWRAP, self.Phase.ROTATE):
            return max(self.total - self.done, 0) / self.rate
        if self.phase == self.Phase.VERIFY:
            return max(self.verify_total - self.verified, 0) / self.rate
        return 0.0


class ReencryptionEvent(models.Model):
    """One line of a re-encryption request's history (customer-visible unless ``internal``)."""

    request = models.ForeignKey(
        ReencryptionRequest, on_delete=models.CASCADE, related_name="timeline"
    )
    kind = models.CharField(max_length=30)
    message = models.TextField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    internal = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"
