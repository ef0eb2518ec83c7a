"""What the sign-in hardening keeps between requests (beyond django-axes' own attempt rows)."""

from django.db import models


class FailureTally(models.Model):
    """Failed attempts of one kind for one e-mail address, not yet written to the audit log.

    ``security.failed_sign_ins`` writes at most one audit event per address, kind and window:
    the first failure of a window at once; later ones are counted here and written, with their
    count, when the window has closed (by the next failure or the beat). ``reported_window`` is
    the window that already has its event.
    """

    event_name = models.CharField(max_length=40)  # "ConsoleLogin" or "CheckMfa"
    username = models.CharField(max_length=254, blank=True)  # "" when none was typed
    reported_window = models.DateTimeField(null=True, blank=True)
    pending = models.PositiveIntegerField(default=0)
    pending_locked_out = models.PositiveIntegerField(
        default=0, help_text="Of the pending failures, those refused or caused by a lockout."
    )
    first_pending_at = models.DateTimeField(null=True, blank=True)
    last_pending_at = models.DateTimeField(null=True, blank=True)
    # The client addresses of the pending failures (a few), and the last one's user agent.
    source_ips = models.JSONField(default=list, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["username", "event_name"], name="failuretally_once")
        ]
        indexes = [
            models.Index(
                fields=["reported_window"],
                condition=models.Q(pending__gt=0),
                name="failuretally_pending",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_name} failures of {self.username or '(no address)'}: {self.pending}"
