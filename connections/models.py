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


class ScopeKind(models.TextChoices):
    """What a scoped revocation takes away (the whole org is ``ByokConnection.state``)."""

    SITE = "site", "Site"
    APP = "app", "App instance"
    PERIOD = "period", "Period of data"


class ScopeState(models.TextChoices):
    REVOKED = "revoked", "Revoked"
    RESTORING = "restoring", "Restoring"
    RESTORED = "restored", "Restored"
    EXPIRED = "expired", "Expired"


class ScopeSource(models.TextChoices):
    PORTAL = "portal", "An org admin in the portal"
    CUSTOMER_AWS = "customer-aws", "The customer's key policy (seen by the health monitor)"


class ScopedRevocation(models.Model):
    """Key access taken away from one site, one app instance or one period of data.

    The state machine is ``connections.scope_lifecycle``. A period is enforced through the data
    keys that sealed its records (``data_keys``, fixed when it is revoked): ``covered_from`` …
    ``covered_to`` is the exact span those keys were used for writing, which contains the
    requested ``period_from`` … ``period_to``.
    """

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="scoped_revocations"
    )
    kind = models.CharField(max_length=10, choices=ScopeKind.choices)
    site = models.ForeignKey(
        "orgs.Site", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    app_instance = models.ForeignKey(
        "orgs.AppInstance", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    period_from = models.DateTimeField(null=True, blank=True)
    period_to = models.DateTimeField(null=True, blank=True)
    covered_from = models.DateTimeField(null=True, blank=True)
    covered_to = models.DateTimeField(null=True, blank=True)
    data_keys = models.ManyToManyField(DataKey, blank=True, related_name="scoped_revocations")
    state = models.CharField(max_length=20, choices=ScopeState.choices, default=ScopeState.REVOKED)
    state_reason = models.CharField(max_length=500, blank=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=20, choices=ScopeSource.choices, default="portal")
    reason = models.CharField(max_length=500, blank=True)
    revoked_by = models.ForeignKey(
        "orgs.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField()
    restore_deadline = models.DateTimeField()
    restored_at = models.DateTimeField(null=True, blank=True)
    restore_checks = models.JSONField(default=list, blank=True)
    notices_sent = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-revoked_at"]
        indexes = [
            # The access guard's per-app question: "is this app or its site revoked?"
            models.Index(fields=["app_instance", "state"], name="scoperev_app_state_idx"),
            models.Index(fields=["site", "state"], name="scoperev_site_state_idx"),
            models.Index(fields=["state", "restore_deadline"], name="scoperev_deadline_idx"),
        ]
        constraints = [
            # Two admins racing to revoke the same app or site: one wins, one clear refusal.
            models.UniqueConstraint(
                fields=["app_instance"],
                condition=models.Q(state__in=["revoked", "restoring"], kind="app"),
                name="scoperev_one_open_per_app",
            ),
            models.UniqueConstraint(
                fields=["site"],
                condition=models.Q(state__in=["revoked", "restoring"], kind="site"),
                name="scoperev_one_open_per_site",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(kind="site", site__isnull=False, app_instance__isnull=True)
                    | models.Q(kind="app", app_instance__isnull=False)
                    | models.Q(kind="period", period_from__isnull=False, period_to__isnull=False)
                ),
                name="scoperev_kind_fields",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.get_state_display()})"

    @property
    def label(self) -> str:
        """The scope in words, for pages, notices and the admin."""
        if self.kind == ScopeKind.SITE:
            return f"site {self.site.name}"
        if self.kind == ScopeKind.APP:
            app = self.app_instance
            return f"{app.get_app_display()} on {app.site.name}"
        fmt = "%Y-%m-%d %H:%M:%S"
        return (
            f"data written {self.covered_from:{fmt}} – {self.covered_to:{fmt}} UTC"
            if self.covered_from and self.covered_to
            else "a period of data (no data keys)"
        )

    def as_parameters(self) -> dict:
        """The scope as the audit event's ``requestParameters`` show it."""
        scope: dict = {"kind": self.kind}
        if self.site_id:
            scope["site"] = self.site.name
        if self.app_instance_id:
            scope["site"] = self.app_instance.site.name
            scope["app"] = self.app_instance.app
            scope["appInstanceId"] = self.app_instance_id
        if self.kind == ScopeKind.PERIOD:
            scope["from"] = self.period_from.isoformat()
            scope["to"] = self.period_to.isoformat()
            scope["coveredFrom"] = self.covered_from.isoformat() if self.covered_from else None
            scope["coveredTo"] = self.covered_to.isoformat() if self.covered_to else None
        return scope
