"""Audit events in AWS CloudTrail's record format, chained per organization by SHA-256."""

from django.db import models


class ImmutableEventError(Exception):
    """Raised on any attempt to change or delete a recorded audit event."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise ImmutableEventError("Audit events cannot be changed.")

    def delete(self):
        raise ImmutableEventError("Audit events cannot be deleted.")


class ChainHead(models.Model):
    """The last link of one hash chain. Locked while appending so links never fork."""

    chain = models.CharField(max_length=40, unique=True)  # "org:<id>" or "vendor"
    sequence = models.BigIntegerField(default=0)
    head_hash = models.CharField(max_length=64, default="0" * 64)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.chain} @ {self.sequence}"


class AuditEvent(models.Model):
    class Kind(models.TextChoices):
        PORTAL = "portal", "Portal action"
        KEY_USAGE = "key-usage", "Key usage"
        INGESTED = "ingested", "From your CloudTrail"

    organization = models.ForeignKey(
        "orgs.Organization",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="audit_events",
        help_text="Empty for vendor-wide events (e.g. a failed login for an unknown address).",
    )
    chain = models.CharField(max_length=40, editable=False)
    sequence = models.BigIntegerField(editable=False)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, editable=False)

    kind = models.CharField(max_length=12, choices=Kind.choices)
    event_id = models.UUIDField(unique=True, editable=False)
    event_time = models.DateTimeField()
    event_source = models.CharField(max_length=100)
    event_name = models.CharField(max_length=100)
    principal = models.CharField(max_length=300, blank=True)
    key_arn = models.CharField(max_length=300, blank=True)
    aws_region = models.CharField(max_length=30, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    request_id = models.CharField(max_length=100, blank=True)
    record = models.JSONField(help_text="The whole CloudTrail record, as recorded.")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-event_time", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "sequence"], name="auditevent_chain_link"),
        ]
        indexes = [
            models.Index(fields=["organization", "-event_time", "-id"], name="audit_org_time"),
            models.Index(
                fields=["organization", "event_name", "-event_time"], name="audit_org_name"
            ),
            models.Index(
                fields=["organization", "event_source", "-event_time"], name="audit_org_src"
            ),
            models.Index(
                fields=["organization", "principal", "-event_time"], name="audit_org_principal"
            ),
            models.Index(fields=["organization", "key_arn", "-event_time"], name="audit_org_key"),
            models.Index(
                fields=["organization", "aws_region", "-event_time"], name="audit_org_region"
            ),
            models.Index(
                fields=["organization", "error_code", "-event_time"], name="audit_org_error"
            ),
            models.Index(fields=["request_id"], name="audit_request_id"),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} at {self.event_time:%Y-%m-%d %H:%M:%S}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableEventError("Audit events cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableEventError("Audit events cannot be deleted.")
