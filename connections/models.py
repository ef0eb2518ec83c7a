"""An organization's BYOK connection: its AWS account, its regional KMS keys, and the data
keys wrapped under them (only wrapped forms are stored)."""

import secrets

from django.db import models

from core.locations import LOCATION_CHOICES, get_location


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
    notices_sent = models.JSONField(
        default=dict,
        blank=True,
        help_text="Notices of the current revocation already sent: notice → time (each once).",
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
