"""The data plane's tables: the encrypted app records and per-app read health."""

from django.db import models


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

    # No index of its own: the (app_instance, id) index below serves every lookup by app (its
    # leading column), and one index fewer is one write fewer per record inserted or rotated.
    app_instance = models.ForeignKey(
        "orgs.AppInstance", on_delete=models.PROTECT, related_name="records", db_index=False
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    data_key = models.ForeignKey(
        "connections.DataKey", on_delete=models.PROTECT, related_name="records"
    )
    ciphertext = models.BinaryField()
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["app_instance", "id"], name="keys_apprec_app_ins_5a26a1_idx")
        ]

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
    # The last explicit read check (beat task or "Check now"): what the BYOK page shows.
    last_check_at = models.DateTimeField(null=True, blank=True)
    last_check_ok = models.BooleanField(null=True, blank=True)
    last_check_detail = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"Data health of {self.app_instance_id}"
