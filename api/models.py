"""Org API tokens and the kill switch's idempotency records.

A token is ``byok_<prefix>_<secret>``: the prefix (public, unique) finds the row, the secret
(256 random bits) is stored only as its SHA-256 and compared in constant time. A token belongs
to one organization and acts as the org admin who created it, for as long as they stay an admin.
"""

from django.conf import settings
from django.db import models

SCOPE_READ = "read"
SCOPE_AUDIT_READ = "audit:read"
SCOPE_KEYS_REVOKE = "keys:revoke"
SCOPE_SETUP_WRITE = "setup:write"

SCOPE_CHOICES = [
    (SCOPE_READ, "read — the organization, its BYOK connection, sites, requests, integrations"),
    (SCOPE_AUDIT_READ, "audit:read — audit events and exports"),
    (
        SCOPE_KEYS_REVOKE,
        "keys:revoke — pull the kill switch (revoke key access of the organization, or of "
        "one site, app or period of data)",
    ),
    (SCOPE_SETUP_WRITE, "setup:write — submit setup requests"),
]
SCOPES = tuple(code for code, _label in SCOPE_CHOICES)


class ApiToken(models.Model):
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, related_name="api_tokens"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, help_text="Scope codes: " + ", ".join(SCOPES))
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "-created_at"], name="apitoken_org")]

    def __str__(self) -> str:
        return f"{self.name} (byok_{self.prefix}_…)"

    @property
    def display_id(self) -> str:
        return f"byok_{self.prefix}"

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])


class IdempotencyRecord(models.Model):
    """What a kill-switch call with an ``Idempotency-Key`` answered, to replay it."""

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="idempotency")
    key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["token", "key"], name="idempotency_once_per_token")
        ]

    def __str__(self) -> str:
        return f"{self.key} → {self.status_code}"
