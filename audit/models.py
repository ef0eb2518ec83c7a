"""Audit events in AWS CloudTrail's record format, chained per organization by SHA-256.

Also the integrity and delivery records around them: signed digests of each chain head, the
customer's CloudTrail source and the files imported from it, and the SIEM webhook with its
delivery log.
"""

from django.db import models

GENESIS_HASH = "0" * 64


class ImmutableEventError(Exception):
    """Raised on any attempt to change or delete a recorded audit event."""


class AuditEventQuerySet(models.QuerySet):
    """Inserts and reads only. Also the base manager's queryset (``Meta.base_manager_name``), so
    ``AuditEvent._base_manager`` and Django's own save path (``_update``) refuse changes too.
    On PostgreSQL a trigger refuses UPDATE and DELETE as well (migration 0007)."""

    def update(self, **kwargs):
        raise ImmutableEventError("Audit events cannot be changed.")

    def _update(self, values):
        raise ImmutableEventError("Audit events cannot be changed.")

    def bulk_update(self, objs, fields, batch_size=None):
        raise ImmutableEventError("Audit events cannot be changed.")

    def delete(self):
        raise ImmutableEventError("Audit events cannot be deleted.")

    def purge_for_retention(self) -> int:
        """The one deletion path, reserved for ``audit.retention``: a raw ``DELETE``.

        Retention deletes a prefix of a chain, records the new base in its :class:`ChainHead`
        and audits the purge in the same transaction. Nothing else may call this. On
        PostgreSQL the caller must first open the trigger's door for its transaction
        (``audit.retention.allow_retention_delete``).
        """
        return self.order_by()._raw_delete(self.db)


class ChainHead(models.Model):
    """The last link of one hash chain. Locked while appending so links never fork.

    ``base_sequence``/``base_prev_hash`` are where verification starts: the genesis until
    retention deletes the oldest links, then the first link kept and the hash it points to.
    """

    chain = models.CharField(max_length=40, unique=True)  # "org:<id>" or "vendor"
    sequence = models.BigIntegerField(default=0)
    head_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    base_sequence = models.BigIntegerField(default=1)
    base_prev_hash = models.CharField(max_length=64, default=GENESIS_HASH)
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
    # Unique per chain, not globally: the same CloudTrail record may be imported into two
    # organizations (e.g. an export moved from one to another); a chain never holds it twice.
    event_id = models.UUIDField(editable=False)
    event_time = models.DateTimeField()
    event_source = models.CharField(max_length=100)
    event_name = models.CharField(max_length=100)
    principal = models.CharField(max_length=300, blank=True)
    key_arn = models.CharField(max_length=300, blank=True)
    aws_region = models.CharField(max_length=30, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    request_id = models.CharField(max_length=100, blank=True)
    record = models.JSONField(help_text="The whole CloudTrail record, as recorded.")
    # How ``hash`` was computed from the record (``audit.chain.link_hash``): 1 = Python's
    # json.dumps text (links written before RFC 8785), 2 = RFC 8785 canonical JSON. Old links
    # keep their format so they stay verifiable.
    hash_format = models.PositiveSmallIntegerField(default=1, db_default=1, editable=False)
    # Provenance of an imported event: the customer's log file it came from
    # ("s3://bucket/key"); empty for what the portal itself recorded.
    imported_from = models.CharField(max_length=1100, blank=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-event_time", "-id"]
        base_manager_name = "objects"
        constraints = [
            models.UniqueConstraint(fields=["chain", "sequence"], name="auditevent_chain_link"),
            # event_id first: the same index serves look-ups by event ID alone.
            models.UniqueConstraint(
                fields=["event_id", "chain"], name="auditevent_event_id_per_chain"
            ),
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
            # "Errors only" walks the org's errors newest first without touching the rest.
            models.Index(
                fields=["organization", "-event_time", "-id"],
                condition=~models.Q(error_code=""),
                name="audit_org_errors",
            ),
            models.Index(fields=["request_id"], name="audit_request_id"),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} at {self.event_time:%Y-%m-%d %H:%M:%S}"

    def save(self, *args, **kwargs):
        if not self._state.adding or kwargs.get("force_update") or kwargs.get("update_fields"):
            raise ImmutableEventError("Audit events cannot be changed.")
        # Always an INSERT: a new instance given an existing primary key must not overwrite it.
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableEventError("Audit events cannot be deleted.")


# --- Trust: signed digests of each chain head ---------------------------------------------


class ChainDigest(models.Model):
    """A signed statement "chain C had N links and its head hash was H at time T".

    Signed hourly with the portal's Ed25519 key (``audit.digests``), only when the head moved.
    Each digest also signs the previous digest's signature, so digests form their own chain.
    """

    chain = models.CharField(max_length=40)
    organization = models.ForeignKey(
        "orgs.Organization",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="audit_digests",
    )
    sequence = models.BigIntegerField()
    head_hash = models.CharField(max_length=64)
    previous_signature = models.CharField(max_length=100, blank=True)
    signed_at = models.DateTimeField()
    key_id = models.CharField(max_length=32)
    signature = models.CharField(max_length=100, help_text="Ed25519 signature, base64.")

    class Meta:
        ordering = ["chain", "-sequence"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "sequence"], name="chaindigest_one_per_link")
        ]

    def __str__(self) -> str:
        return f"Digest of {self.chain} @ {self.sequence}"


# --- Ingestion of the customer's own CloudTrail --------------------------------------------


class CloudTrailSource(models.Model):
    """Where an organization's trail writes its log files, read through the assumed role."""

    class Scope(models.TextChoices):
        BYOK = "byok", "Only events that touch your BYOK keys or role"
        ALL = "all", "Every event in the bucket and prefix"

    organization = models.OneToOneField(
        "orgs.Organization", on_delete=models.PROTECT, related_name="cloudtrail_source"
    )
    bucket = models.CharField(max_length=63)
    prefix = models.CharField(max_length=900, blank=True)
    region = models.CharField(max_length=30, help_text="The bucket's AWS region.")
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.BYOK)
    enabled = models.BooleanField(default=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} ({self.organization_id})"


class IngestedFile(models.Model):
    """What one import did with one log file (one S3 object version, by ETag)."""

    class Status(models.TextChoices):
        IMPORTED = "imported", "Imported"
        SKIPPED = "skipped", "Skipped"
        MALFORMED = "malformed", "Malformed"

    source = models.ForeignKey(CloudTrailSource, on_delete=models.CASCADE, related_name="files")
    key = models.CharField(max_length=1024)
    etag = models.CharField(max_length=100)
    size = models.BigIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices)
    records_total = models.PositiveIntegerField(default=0)
    records_imported = models.PositiveIntegerField(default=0)
    records_duplicate = models.PositiveIntegerField(default=0)
    records_dropped = models.PositiveIntegerField(
        default=0, help_text="Not about this organization's keys or role, or past retention."
    )
    records_refused = models.PositiveIntegerField(
        default=0, help_text="Claimed to be the portal's own events: never imported."
    )
    error = models.CharField(max_length=500, blank=True)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-processed_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "key", "etag"], name="ingestedfile_once_per_version"
            )
        ]
        indexes = [models.Index(fields=["source", "-processed_at"], name="ingested_recent")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"

    @property
    def badge_status(self) -> str:
        return {"imported": "active", "skipped": "unknown", "malformed": "failed"}[self.status]


# --- SIEM delivery ----------------------------------------------------------------------------


class WebhookEndpoint(models.Model):
    """An organization's SIEM webhook. The shared secret is stored encrypted, never shown."""

    organization = models.OneToOneField(
        "orgs.Organization", on_delete=models.PROTECT, related_name="audit_webhook"
    )
    url = models.URLField(max_length=500)
    secret_encrypted = models.TextField(help_text="Fernet token; see audit.webhooks.")
    enabled = models.BooleanField(default=True)
    start_sequence = models.BigIntegerField(
        default=0, help_text="Events after this link of the org's chain are delivered."
    )
    swept_sequence = models.BigIntegerField(
        default=0, help_text="The sweeper has made a delivery for every event up to here."
    )
    secret_set_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Webhook of {self.organization_id} → {self.url}"


class WebhookDelivery(models.Model):
    """The delivery of one event to one webhook: attempts, outcome, and each attempt's result."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(
        AuditEvent, on_delete=models.PROTECT, related_name="webhook_deliveries"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    history = models.JSONField(
        default=list, blank=True, help_text="[{at, statusCode, error, retryInS}] per attempt."
    )
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event"], name="webhookdelivery_once")
        ]
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="webhook_recent"),
            models.Index(fields=["status", "next_attempt_at"], name="webhook_due"),
        ]

    def __str__(self) -> str:
        return f"Delivery of {self.event_id} to {self.endpoint_id}: {self.status}"

    @property
    def badge_status(self) -> str:
        return {"pending": "pending", "delivered": "active", "failed": "failed"}[self.status]


# --- The vendor's record of its calls, confirmed by the customer's CloudTrail ---------------


class TrailCallMatch(models.Model):
    """One call made with the vendor's role, as the customer's own CloudTrail shows it, and the
    portal's key-usage event with the same request ID (empty: the portal has no record of the
    call — an *unexplained* call, flagged as a possible misuse of the role).

    Written by ``integrations.reconcile`` in the transaction that imports the trail event;
    retention deletes a row with the first of its two events to go (``audit.retention``).
    """

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="trail_call_matches"
    )
    request_id = models.CharField(max_length=100, blank=True)
    event_name = models.CharField(max_length=100)
    call_time = models.DateTimeField(help_text="The call's eventTime in the customer's trail.")
    trail_event = models.OneToOneField(
        AuditEvent, on_delete=models.PROTECT, related_name="trail_call_match"
    )
    portal_event = models.ForeignKey(
        AuditEvent, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The portal event's own time: confirmed calls are counted on the day the portal recorded
    # them, the same day as the key-usage event they confirm.
    recorded_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        "orgs.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    matched_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-call_time", "-id"]
        constraints = [
            # One row per call: a second trail record of the same request changes nothing.
            models.UniqueConstraint(
                fields=["organization", "request_id"],
                condition=~models.Q(request_id=""),
                name="trailcall_once_per_request",
            )
        ]
        indexes = [
            # Confirmed calls per day (recorded_at is empty for unexplained ones).
            models.Index(fields=["organization", "recorded_at"], name="trailcall_confirmed"),
            models.Index(
                fields=["organization", "call_time"],
                condition=models.Q(portal_event__isnull=True),
                name="trailcall_unexplained",
            ),
            # The banner, on every page of an org admin: unacknowledged unexplained calls.
            models.Index(
                fields=["organization"],
                condition=models.Q(portal_event__isnull=True, acknowledged_at__isnull=True),
                name="trailcall_open_alerts",
            ),
        ]

    def __str__(self) -> str:
        state = "confirmed" if self.portal_event_id else "unexplained"
        return f"{self.event_name} {self.request_id} ({state})"

    @property
    def is_confirmed(self) -> bool:
        return self.portal_event_id is not None


class EventCount(models.Model):
    """How many events an organization's log holds in one UTC hour (by ``event_time``).

    Kept in the same transaction as each event (``audit.counts``), so the audit page's chart
    and the vendor's calls per day cost their number of hours, not their number of events.
    Retention subtracts what it purges.
    """

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+"
    )
    hour = models.DateTimeField(help_text="Start of the UTC hour.")
    total = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    key_usage = models.BigIntegerField(default=0)
    # The vendor's calls of this hour the customer's trail confirmed (by the hour the portal
    # recorded them), and the trail's calls of this hour the portal has no record of.
    confirmed = models.BigIntegerField(default=0)
    unexplained = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "hour"], name="eventcount_org_hour")
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} @ {self.hour:%Y-%m-%d %H}:00: {self.total}"


class EventVolume(models.Model):
    """How many events (and errors) an organization's log holds in one UTC hour with one
    combination of the audit page's filter columns (name, source, principal, key, region).

    Kept in the same transaction as each event (``audit.volume``), so the chart of a filtered
    range costs its number of (hour, combination) rows, not its number of events: a day of a
    busy org is a few dozen rows. ``dims`` is a digest of the five values, for the unique key
    (the values themselves can be long).
    """

    # Indexed by the unique key and the per-column indexes below, which all lead with it.
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    hour = models.DateTimeField(help_text="Start of the UTC hour.")
    dims = models.CharField(
        max_length=32, help_text="MD5 of the five columns below (a key, not a security measure)."
    )
    event_name = models.CharField(max_length=100)
    event_source = models.CharField(max_length=100)
    principal = models.CharField(max_length=300)
    key_arn = models.CharField(max_length=300)
    aws_region = models.CharField(max_length=30)
    total = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "hour", "dims"], name="eventvolume_org_hour_dims"
            )
        ]
        # A filtered chart reads one column's rows of the range: (org, column, hour) each.
        indexes = [
            models.Index(fields=["organization", column, "hour"], name=f"eventvolume_org_{short}")
            for column, short in (
                ("event_name", "name"),
                ("event_source", "src"),
                ("principal", "principal"),
                ("key_arn", "key"),
                ("aws_region", "region"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} @ {self.hour:%Y-%m-%d %H}:00: {self.total}"
