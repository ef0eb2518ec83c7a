"""Setup requests: an org admin asks for BYOK; an account representative checks and provisions."""

from django.db import models

from core.locations import LOCATION_CHOICES, get_location
from review.models import CheckRun, ReviewRequest, TimelineEntry


class SetupRequest(ReviewRequest):
    class Status(models.TextChoices):
        SUBMITTED = "submitted", "Submitted"
        CLAIMED = "claimed", "In review"
        PROVISIONED = "provisioned", "Provisioned"
        REJECTED = "rejected", "Rejected"

    OPEN_STATUSES = (Status.SUBMITTED, Status.CLAIMED)
    CLAIMABLE_STATUSES = (Status.SUBMITTED,)

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="setup_requests"
    )
    aws_account_id = models.CharField(max_length=12)
    site_name = models.CharField(max_length=63)
    location = models.CharField(max_length=10, choices=LOCATION_CHOICES)
    apps = models.JSONField(help_text="App codes to provision with BYOK: jira, confluence, jsm.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SUBMITTED)

    class Meta(ReviewRequest.Meta):
        indexes = [
            models.Index(
                fields=["status", "location", "created_at"], name="keys_setupr_status_e40e82_idx"
            )
        ]
        permissions = [
            ("process_setuprequest", "Can claim, provision and reject setup requests"),
            ("run_preflight", "Can run a preflight check of a customer's AWS side"),
        ]

    def __str__(self) -> str:
        return f"Setup request #{self.pk} — {self.organization} / {self.site_name}"

    @property
    def location_info(self):
        return get_location(self.location)


class RequestEvent(TimelineEntry):
    """One line of a setup request's timeline."""

    request = models.ForeignKey(SetupRequest, on_delete=models.CASCADE, related_name="timeline")

    class Meta(TimelineEntry.Meta):
        pass


class PreflightRun(CheckRun):
    """A preflight of a setup request: the role and a key in every region of the location."""

    request = models.ForeignKey(SetupRequest, on_delete=models.CASCADE, related_name="preflights")

    class Meta(CheckRun.Meta):
        pass

    def __str__(self) -> str:
        return f"Preflight #{self.pk} of request #{self.request_id}: {self.status}"
