"""Ingestion of the customer's own CloudTrail: log files in their S3 bucket, read as their role.

An org admin names the bucket, prefix and region their trail writes to. A Celery task lists
the prefix through the assumed BYOK role and imports every log file it has not seen (by key
and ETag): gzip (or plain) JSON ``{"Records": [...]}``. Each file is imported in one
transaction, all or nothing, and leaves an :class:`~audit.models.IngestedFile` row saying what
happened — imported (with counts), skipped (not a log file) or malformed (with the reason).
Whatever a file holds, it never stops the run (``integrations.logfile`` parses any bytes into
records or a reason; an unexpected error is logged and recorded on the file), and importing the
same files again changes nothing.

Imported events carry their provenance (``AuditEvent.imported_from``: the ``s3://`` file), and
a record that claims to be the portal's own — its event source, a portal user or system as the
identity — is refused and named in the file's outcome: an imported record never passes for
something the portal recorded.

What is kept depends on the source's scope:

* ``byok`` (default): events that touch the organization's BYOK keys — any key the connection
  ever had, current or retired, by ARN or key ID — or its BYOK role (the role ARN, sessions of
  the role, IAM calls on it).
* ``all``: every record in the prefix. For a trail dedicated to key management, and for moving
  a portal export from one organization to another: the portal's own JSON export
  (``{"Records", "Chain", "Digests"}``) is a valid log file. Its AWS records (key usage,
  imported trail events) are imported as they are; the portal's own actions are refused like
  any record claiming the portal's event source (``Chain`` and ``Digests`` are ignored: they
  vouch for the exporting org's chain, which still proves those).

Either way, the portal's own reads of the trail bucket (S3 data events of the BYOK role's
sessions) are left out: imported, every read would be logged again, file after file.

Records are de-duplicated by ``eventID`` within the organization's chain (the model's unique
constraint is per chain), so the same event may live in two organizations but never twice in
one. Records older than the retention period are dropped: retention would delete them at once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from audit.chain import chain_name_for
from audit.models import AuditEvent, CloudTrailSource, IngestedFile
from audit.retention import retention_cutoff
from audit.services import record_event
from connections import aws
from connections.key_usage import recorder_for, session_arn_prefix
from connections.models import ByokConnection, ConnectionState, RegionalKey
from core import metrics
from core.errors import NotAllowed
from core.tasks import enqueue, enqueue_on_commit
from integrations.logfile import (
    MalformedLogFile,
    event_time_of,
    is_log_file,
    parse_log_file,
    portal_claim,
)
from integrations.reconcile import reconcile_imported_events

log = logging.getLogger(__name__)

# Key access is taken away in these states: the role cannot (and must not) be assumed.
_PAUSED_STATES = (ConnectionState.PENDING, ConnectionState.REVOKED, ConnectionState.EXPIRED)
_LOOKUP_BATCH = 500


class IngestionRefused(NotAllowed):
    """A configuration the portal cannot use; the message is for the org admin."""


# --- Tenant-scoped reads ------------------------------------------------------------------


def source_of(org) -> CloudTrailSource | None:
    return CloudTrailSource.objects.filter(organization=org).first()


def recent_files_of(org, *, limit: int = 50) -> list[IngestedFile]:
    return list(IngestedFile.objects.filter(source__organization=org).order_by("-id")[:limit])


# --- Configuration (org admin) --------------------------------------------------------------


@transaction.atomic
def configure_cloudtrail_source(
    *,
    org,
    actor,
    bucket: str,
    prefix: str,
    region: str,
    scope: str,
    enabled: bool = True,
    source_ip: str = "",
) -> CloudTrailSource:
    """Create or change the org's CloudTrail source; the first import starts after commit."""
    connection = ByokConnection.objects.filter(organization=org).first()
    if connection is None:
        raise IngestionRefused(
            "Set up BYOK first: the portal reads your trail through your BYOK role."
        )
    if scope not in CloudTrailSource.Scope.values:
        raise IngestionRefused("Choose which events to import.")
    source, created = CloudTrailSource.objects.select_for_update(no_key=True).get_or_create(
        organization=org,
        defaults={
            "bucket": bucket,
            "prefix": prefix,
            "region": region,
            "scope": scope,
            "enabled": enabled,
        },
    )
    if not created:
        source.bucket, source.prefix, source.region = bucket, prefix, region
        source.scope, source.enabled = scope, enabled
        source.last_error = ""
        source.save()
    record_event(
        org=org,
        actor=actor,
        event_name="PutCloudTrailSource",
        source_ip=source_ip,
        request_parameters={
            "bucketName": bucket,
            "prefix": prefix,
            "region": region,
            "scope": scope,
            "enabled": enabled,
        },
        response_elements={"created": created},
        recipient_account_id=connection.aws_account_id,
    )
    if enabled:
        _import_later(source.pk)
    return source


@transaction.atomic
def request_import(*, org, actor, source_ip: str = "") -> CloudTrailSource:
    """ "Import now": queue an import of new log files (the beat schedule does it anyway)."""
    source = (
        CloudTrailSource.objects.select_for_update(no_key=True).filter(organization=org).first()
    )
    if source is None or not source.enabled:
        raise IngestionRefused("Configure and enable a CloudTrail source first.")
    record_event(
        org=org,
        actor=actor,
        event_name="StartCloudTrailImport",
        source_ip=source_ip,
        request_parameters={"bucketName": source.bucket, "prefix": source.prefix},
    )
    _import_later(source.pk)
    return source


def _import_later(source_id: int) -> None:
    enqueue_on_commit("integrations.tasks.ingest_cloudtrail_task", source_id, robust=True)


# --- Which records concern the organization -------------------------------------------------


@dataclass(frozen=True)
class ByokMatcher:
    """Does a CloudTrail record touch one of the org's BYOK keys or its BYOK role?"""

    key_arns: frozenset[str]
    key_ids: frozenset[str]
    role_arn: str
    role_name: str
    account_id: str

    @classmethod
    def for_connection(cls, connection: ByokConnection) -> ByokMatcher:
        arns = frozenset(
            RegionalKey.objects.filter(connection=connection).values_list("key_arn", flat=True)
        )
        return cls(
            key_arns=arns,
            key_ids=frozenset(a.rsplit("/", 1)[-1] for a in arns if ":key/" in a),
            role_arn=connection.role_arn,
            role_name=connection.role_name,
            account_id=connection.aws_account_id,
        )

    @property
    def session_prefix(self) -> str:
        """ARNs of sessions of the BYOK role start with this."""
        return session_arn_prefix(account_id=self.account_id, role_arn=self.role_arn)

    def touches(self, record: dict) -> bool:
        prefix = self.session_prefix
        for part in (
            "resources",
            "requestParameters",
            "responseElements",
            "userIdentity",
            "additionalEventData",
        ):
            for value in _strings(record.get(part)):
                if (
                    value in self.key_arns
                    or value in self.key_ids
                    or value == self.role_arn
                    or value.startswith(prefix)
                ):
                    return True
        # IAM calls name the role by name only (UpdateAssumeRolePolicy, PutRolePolicy …).
        params = record.get("requestParameters") or {}
        return (
            record.get("eventSource") == "iam.amazonaws.com"
            and isinstance(params, dict)
            and params.get("roleName") == self.role_name
            and record.get("recipientAccountId") in (self.account_id, None, "")
        )


def _strings(value, depth: int = 0) -> Iterator[str]:
    if depth > 8:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)


class _Everything:
    def touches(self, record: dict) -> bool:
        return True


@dataclass(frozen=True)
class _WithoutOwnReads:
    """Leaves out the portal's own reads of the trail bucket (S3 data events, if the trail
    logs them): imported, each read would be logged again, and again, file after file."""

    inner: object
    bucket: str
    session_prefix: str

    def touches(self, record: dict) -> bool:
        params = record.get("requestParameters")
        identity = record.get("userIdentity")
        if (
            record.get("eventSource") == "s3.amazonaws.com"
            and isinstance(params, dict)
            and params.get("bucketName") == self.bucket
            and isinstance(identity, dict)
            and str(identity.get("arn", "")).startswith(self.session_prefix)
        ):
            return False
        return self.inner.touches(record)


# --- Import -----------------------------------------------------------------------------------


@dataclass
class IngestionRun:
    source_id: int
    files_imported: int = 0
    files_skipped: int = 0
    files_malformed: int = 0
    records_imported: int = 0
    error: str = ""
    transient: bool = False
    files: list[IngestedFile] = field(default_factory=list)


def ingest_source(*, source_id: int) -> IngestionRun:
    """Import every new log file of one source. Idempotent: seen files are not read again."""
    run = IngestionRun(source_id=source_id)
    source = CloudTrailSource.objects.select_related("organization").filter(pk=source_id).first()
    if source is None or not source.enabled:
        return run
    org = source.organization
    connection = ByokConnection.objects.filter(organization=org).first()
    if connection is None:
        return _finish(source, run, "No BYOK connection: the portal has no role to read with.")
    if connection.state in _PAUSED_STATES:
        return _finish(
            source,
            run,
            f"Key access is {connection.get_state_display().lower()}: imports are paused.",
        )
    byok = ByokMatcher.for_connection(connection)
    matcher = _WithoutOwnReads(
        _Everything() if source.scope == CloudTrailSource.Scope.ALL else byok,
        bucket=source.bucket,
        session_prefix=byok.session_prefix,
    )
    unreadable: list[str] = []
    try:
        session = aws.assume_customer_role(
            role_arn=connection.role_arn,
            external_id=connection.external_id,
            on_call=recorder_for(org),
        )
        for batch in _new_objects(source, session):
            for obj in batch:
                try:
                    ingested = _ingest_or_record_failure(source, session, obj, matcher)
                except aws.AccessDenied:
                    # One object the role may not read (e.g. encrypted under another KMS key)
                    # must not stop the others; it is not recorded, so the next run retries it.
                    unreadable.append(obj.key)
                    continue
                if ingested is None:
                    continue
                run.files.append(ingested)
                run.records_imported += ingested.records_imported
                if ingested.status == IngestedFile.Status.IMPORTED:
                    run.files_imported += 1
                elif ingested.status == IngestedFile.Status.SKIPPED:
                    run.files_skipped += 1
                else:
                    run.files_malformed += 1
    except aws.AwsError as exc:
        run.transient = exc.transient
        return _finish(source, run, _describe(exc, source))
    return _finish(source, run, _unreadable_files(unreadable))


def _unreadable_files(keys: list[str]) -> str:
    if not keys:
        return ""
    return (
        f"Your BYOK role may not read {len(keys)} log file(s) (s3:GetObject refused; first: "
        f"{keys[0]}); the others were imported and the next run tries these again."
    )


def _describe(exc: aws.AwsError, source: CloudTrailSource) -> str:
    where = f"s3://{source.bucket}/{source.prefix}"
    if isinstance(exc, aws.RoleUnavailable):
        return f"The portal could not assume your BYOK role: {exc.message}"
    if isinstance(exc, aws.ObjectNotFound):
        return f"{where} does not exist in {source.region}: {exc.message}"
    if isinstance(exc, aws.AccessDenied):
        return (
            f"Your BYOK role may not read {where} (s3:ListBucket and s3:GetObject are "
            f"needed): {exc.message}"
        )
    if exc.transient:
        return f"AWS did not answer; the next run retries: {exc.message}"
    return f"Reading {where} failed: {exc.message}"


def _finish(source: CloudTrailSource, run: IngestionRun, error: str) -> IngestionRun:
    now = timezone.now()
    run.error = error
    updates = {"last_run_at": now, "last_error": error[:500]}
    if not error:
        updates["last_success_at"] = now
    CloudTrailSource.objects.filter(pk=source.pk).update(**updates)
    metrics.CLOUDTRAIL_IMPORTS.labels(outcome="error" if error else "ok").inc()
    if run.records_imported:
        metrics.CLOUDTRAIL_RECORDS.inc(run.records_imported)
    if error:
        log.warning("CloudTrail import of source %s: %s", source.pk, error)
    return run


def _new_objects(source: CloudTrailSource, session) -> Iterator[list[aws.S3Object]]:
    """Listed objects not imported yet (same key and ETag), in batches of a few hundred."""
    batch: list[aws.S3Object] = []
    for obj in session.list_objects(source.region, source.bucket, source.prefix):
        batch.append(obj)
        if len(batch) >= _LOOKUP_BATCH:
            yield _unseen(source, batch)
            batch = []
    if batch:
        yield _unseen(source, batch)


def _unseen(source: CloudTrailSource, objects: list[aws.S3Object]) -> list[aws.S3Object]:
    seen = set(
        IngestedFile.objects.filter(source=source, key__in=[o.key for o in objects]).values_list(
            "key", "etag"
        )
    )
    return [o for o in objects if (o.key, o.etag) not in seen]


#: What the integrations page says of a file whose import failed unexpectedly (the exception
#: is logged for the vendor's engineers; its text may hold internals and is not shown).
IMPORT_FAILED = (
    "The portal could not import this file (an unexpected error, reported to the vendor); "
    "it is not retried unless the file changes."
)


def _ingest_or_record_failure(source, session, obj: aws.S3Object, matcher) -> IngestedFile | None:
    """One file, whatever it holds: an unexpected error is recorded on the file, so the run
    goes on to the next one and the next run does not read it again."""
    try:
        return _ingest_object(source, session, obj, matcher)
    except (aws.AwsError, OperationalError, InterfaceError):
        raise  # AWS or the database, not the file: the run stops and the next one retries
    except Exception:  # noqa: BLE001 — any file, however built, must not jam the org's imports
        log.exception("CloudTrail import of s3://%s/%s failed", source.bucket, obj.key)
        return _record_file(source, obj, status=IngestedFile.Status.MALFORMED, error=IMPORT_FAILED)


def _ingest_object(source, session, obj: aws.S3Object, matcher) -> IngestedFile | None:
    if not is_log_file(obj.key):
        return _record_file(
            source, obj, status=IngestedFile.Status.SKIPPED, error="Not a CloudTrail log file."
        )
    try:
        data = session.get_object(
            source.region, source.bucket, obj.key, max_bytes=settings.AUDIT_INGEST_MAX_FILE_BYTES
        )
        records = parse_log_file(data)
    except aws.ObjectNotFound:
        return None  # deleted between listing and reading: nothing to import
    except (aws.ObjectTooLarge, MalformedLogFile) as exc:
        return _record_file(source, obj, status=IngestedFile.Status.MALFORMED, error=str(exc))
    return import_records(source=source, obj=obj, records=records, matcher=matcher)


def _record_file(source, obj: aws.S3Object, *, status: str, error: str = "") -> IngestedFile:
    ingested, _ = IngestedFile.objects.get_or_create(
        source=source,
        key=obj.key,
        etag=obj.etag,
        defaults={"size": obj.size, "status": status, "error": error[:500]},
    )
    return ingested


@transaction.atomic
def import_records(
    *, source: CloudTrailSource, obj: aws.S3Object, records: list[dict], matcher
) -> IngestedFile | None:
    """Import one file's records into the org's chain, all or nothing, and say what happened."""
    # One import of a source at a time: the file may have been imported meanwhile.
    CloudTrailSource.objects.select_for_update(no_key=True).filter(pk=source.pk).first()
    existing = IngestedFile.objects.filter(source=source, key=obj.key, etag=obj.etag).first()
    if existing is not None:
        return None
    org = source.organization
    cutoff = retention_cutoff()
    refused: list[tuple[int, dict, str]] = []
    kept = []
    for index, record in enumerate(records, start=1):
        claim = portal_claim(record)
        if claim:
            refused.append((index, record, claim))
        elif matcher.touches(record) and event_time_of(record) >= cutoff:
            kept.append(record)
    already = _recorded_event_ids(chain_name_for(org.pk), (r["eventID"] for r in kept))
    imported_from = f"s3://{source.bucket}/{obj.key}"
    events: list[AuditEvent] = []
    duplicate = 0
    for record in kept:
        event_id = str(uuid.UUID(record["eventID"]))
        if event_id in already:
            duplicate += 1
            continue
        already.add(event_id)
        events.append(
            record_event(
                org=org,
                kind=AuditEvent.Kind.INGESTED,
                event_name=record.get("eventName") or "",
                record=record,
                event_time=event_time_of(record),
                imported_from=imported_from,
            )
        )
    reconcile_imported_events(org=org, events=events)
    if refused:
        log.warning(
            "CloudTrail import of %s: %d records claim to be the portal's own; refused",
            imported_from,
            len(refused),
        )
    return IngestedFile.objects.create(
        source=source,
        key=obj.key,
        etag=obj.etag,
        size=obj.size,
        status=IngestedFile.Status.IMPORTED,
        records_total=len(records),
        records_imported=len(events),
        records_duplicate=duplicate,
        records_dropped=len(records) - len(kept) - len(refused),
        records_refused=len(refused),  # the error text says why, naming the first
        error=refusal_note(refused),
    )


def refusal_note(refused: list[tuple[int, dict, str]]) -> str:
    """The file's outcome when records claimed to be the portal's own ("" when none did)."""
    if not refused:
        return ""
    index, record, claim = refused[0]
    count = len(refused)
    many = f"{count} records were" if count > 1 else "1 record was"
    first = f"record {index}, eventID {record['eventID'][:45]}"
    return (
        f"{many} refused: only the portal writes events with its own event source or "
        f"identities, and an imported record cannot pass for one (first: {first}, with "
        f"{claim})."
    )[:500]


def _recorded_event_ids(chain: str, event_ids: Iterable[str]) -> set[str]:
    ids = sorted({str(uuid.UUID(str(e))) for e in event_ids})
    found: set[str] = set()
    for start in range(0, len(ids), _LOOKUP_BATCH):
        found.update(
            str(e)
            for e in AuditEvent.objects.filter(
                chain=chain, event_id__in=ids[start : start + _LOOKUP_BATCH]
            ).values_list("event_id", flat=True)
        )
    return found


def ingest_all() -> list[int]:
    """Beat: queue an import of every enabled source. Returns the source ids."""
    ids = list(CloudTrailSource.objects.filter(enabled=True).values_list("pk", flat=True))
    for source_id in ids:
        enqueue("integrations.tasks.ingest_cloudtrail_task", source_id)
    return ids
