"""Re-encryption of an organization's BYOK data under new KMS keys: requests and the job."""

from django.db import models

from review.models import CheckRun, ReviewRequest, TimelineEntry


class ReencryptionMode(models.TextChoices):
    REWRAP = "rewrap", "Re-wrap data keys"
    ROTATE = "rotate", "Full rotation"


class ReencryptionRequest(ReviewRequest):
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
    CLAIMABLE_STATUSES = (Status.SUBMITTED,)

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="reencryption_requests"
    )
    connection = models.ForeignKey(
        "connections.ByokConnection", on_delete=models.PROTECT, related_name="reencryption_requests"
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
    approved_at = models.DateTimeField(null=True, blank=True)

    class Meta(ReviewRequest.Meta):
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


class ReencryptionPreflight(CheckRun):
    """A preflight of the new keys of a re-encryption request (same checks as setup, plus
    "the key is new" and a ReEncrypt from the current key to the new one)."""

    request = models.ForeignKey(
        ReencryptionRequest, on_delete=models.CASCADE, related_name="preflights"
    )

    class Meta(CheckRun.Meta):
        pass

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
        "connections.ByokConnection", on_delete=models.PROTECT, related_name="reencryption_jobs"
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


class ReencryptionEvent(TimelineEntry):
    """One line of a re-encryption request's history."""

    request = models.ForeignKey(
        ReencryptionRequest, on_delete=models.CASCADE, related_name="timeline"
    )

    class Meta(TimelineEntry.Meta):
        pass
