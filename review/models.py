"""The review workflow's shape, shared by setup requests and re-encryption requests.

Abstract models only: each request kind keeps its own table. A request is submitted by an org
admin, claimed by one account representative (the assignee), checked by preflight runs,
then closed (provisioned/approved, rejected or cancelled); its timeline records every step.
"""

from django.conf import settings
from django.db import models


class ReviewRequest(models.Model):
    """A customer's request that an account representative reviews."""

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="assigned_%(class)ss",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    #: Statuses in which the request can still be claimed, checked and decided.
    OPEN_STATUSES: tuple[str, ...] = ()
    #: Statuses a representative may claim from.
    CLAIMABLE_STATUSES: tuple[str, ...] = ()

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class TimelineEntry(models.Model):
    """One line of a request's timeline (customer-visible unless ``internal``)."""

    kind = models.CharField(max_length=30)
    message = models.TextField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    internal = models.BooleanField(default=False, help_text="Internal notes: vendor staff only.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"


class CheckRun(models.Model):
    """A preflight run: checks of the customer's AWS side, run by a worker."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    FINISHED_STATUSES = (Status.PASSED, Status.FAILED)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    checks = models.JSONField(
        default=list, help_text="[{name, region, passed, detail, remediation}]"
    )
    key_arns = models.JSONField(default=dict, help_text="Region → key ARN found.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
