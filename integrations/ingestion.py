"""Ingestion of the customer's own CloudTrail: log files in their S3 bucket, read as their role.

An org admin names the bucket, prefix and region their trail writes to. A Celery task lists
the prefix through the assumed BYOK role and imports every log file it has not seen (by key
and ETag): gzip (or plain) JSON ``{"Records": [...]}``. Each file is imported in one
transaction, all or nothing, and leaves an :class:`~audit.models.IngestedFile` row saying what
happened — imported (with counts), skipped (not a log file) or malformed (with the reason). A
malformed file never stops the run, and importing the same files again changes nothing.

What is kept depends on the source's scope:

* ``byok`` (default): events that touch the organization's BYOK keys — any key the connection
  ever had, current or retired, by ARN or key ID — or its BYOK role (the role ARN, sessions of
  the role, IAM calls on it).
* ``all``: every record in the prefix. For a trail dedicated to key management, and for moving
  a portal export from one organization to another: the portal's own JSON export
  (``{"Records", "Chain", "Digests"}``) is a valid log file, and its records are imported as
  they are (``Chain`` and ``Digests`` are ignored: they vouch for the exporting org's chain).

Either way, the portal's own reads of the trail bucket (S3 data events of the BYOK role's
sessions) are left out: imported, every read would be logged again, file after file.

Records are de-duplicated by ``eventID`` within the organization's chain (the model's unique
constraint is per chain), so the same event may live in two organizations but never twice in
one. Records older than the retention period are dropped: retention would delete them at once.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.chain import chain_name_for
from audit.models import AuditEvent, CloudTrailSource, IngestedFile
from audit.retention import retention_cutoff
from audit.services import record_event
from connections import aws
from connections.key_usage import recorder_for
from connections.models import ByokConnection, ConnectionState, RegionalKey
from core.errors import NotAllowed
from core.tasks import enqueue, enqueue_on_commit

log = logging.getLogger(__name__)

# Key access is taken away in these states: the role cannot (and must not) be assumed.
_PAUSED_STATES = (ConnectionState.PENDING, ConnectionState.REVOKED, ConnectionState.EXPIRED)
_LOOKUP_BATCH = 500


class IngestionRefused(NotAllowed):
    """A configuration the portal cannot use; the message is for the org admin."""


class MalformedLogFile(Exception):
    """The file is not a CloudTrail log file the portal can import."""


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
        return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/"

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


# --- Parsing ---------------------------------------------------------------------------------


def parse_log_file(data: bytes, *, max_bytes: int | None = None) -> list[dict]:
    """The records of a CloudTrail log file (gzip or plain JSON), validated.

    Raises :class:`MalformedLogFile` naming the first problem: not gzip, not JSON, no
    ``Records`` list, a record without a usable ``eventID``/``eventTime``, or a field of the
    wrong type.
    """
    limit = max_bytes or settings.AUDIT_INGEST_MAX_FILE_BYTES
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                data = stream.read(limit + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise MalformedLogFile(f"Not a valid gzip file ({exc}).") from exc
        if len(data) > limit:
            raise MalformedLogFile(f"Larger than {limit} bytes uncompressed.")
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedLogFile("Not UTF-8 text.") from exc
    except ValueError as exc:
        raise MalformedLogFile(f"Not valid JSON ({exc}).") from exc
    if not isinstance(document, dict) or not isinstance(document.get("Records"), list):
        raise MalformedLogFile('Not a CloudTrail log file: no "Records" list.')
    records = document["Records"]
    for index, record in enumerate(records, start=1):
        problem = _record_problem(record)
        if problem:
            raise MalformedLogFile(f"Record {index}: {problem}.")
    return records


_STRING_FIELDS = ("eventSource", "eventName", "awsRegion", "errorCode", "requestID")
_IDENTITY_STRING_FIELDS = ("userName", "arn", "invokedBy", "principalId")


def _record_problem(record) -> str:
    if not isinstance(record, dict):
        return "not a JSON object"
    try:
        uuid.UUID(str(record.get("eventID")))
    except ValueError:
        return "no valid eventID"
    if _event_time(record) is None:
        return "no valid eventTime (ISO 8601 with a time zone)"
    for name in _STRING_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], str):
            return f"{name} is not a string"
    identity = record.get("userIdentity")
    if identity is not None:
        if not isinstance(identity, dict):
            return "userIdentity is not an object"
        for name in _IDENTITY_STRING_FIELDS:
            if identity.get(name) is not None and not isinstance(identity[name], str):
                return f"userIdentity.{name} is not a string"
    resources = record.get("resources")
    if resources is not None:
        if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
            return "resources is not a list of objects"
        if any(not isinstance(r.get("ARN", ""), str) for r in resources):
            return "a resource ARN is not a string"
    return ""


def _event_time(record: dict) -> datetime | None:
    value = record.get("eventTime")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def is_log_file(key: str) -> bool:
    """CloudTrail log files (and portal exports): ``*.json.gz`` or ``*.json``, not digests."""
    if "/CloudTrail-Digest/" in f"/{key}" or key.endswith("/"):
        return False
    return key.endswith((".json.gz", ".json"))


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
    try:
        session = aws.assume_customer_role(
            role_arn=connection.role_arn,
            external_id=connection.external_id,
            on_call=recorder_for(org),
        )
        for batch in _new_objects(source, session):
            for obj in batch:
                ingested = _ingest_object(source, session, obj, matcher)
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
    return _finish(source, run, "")


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
    kept = [r for r in records if matcher.touches(r) and _event_time(r) >= cutoff]
    already = _recorded_event_ids(chain_name_for(org.pk), (r["eventID"] for r in kept))
    imported = duplicate = 0
    for record in kept:
        event_id = str(uuid.UUID(str(record["eventID"])))
        if event_id in already:
            duplicate += 1
            continue
        already.add(event_id)
        record_event(
            org=org,
            kind=AuditEvent.Kind.INGESTED,
            event_name=record.get("eventName") or "",
            record=record,
        )
        imported += 1
    return IngestedFile.objects.create(
        source=source,
        key=obj.key,
        etag=obj.etag,
        size=obj.size,
        status=IngestedFile.Status.IMPORTED,
        records_total=len(records),
        records_imported=imported,
        records_duplicate=duplicate,
        records_dropped=len(records) - len(kept),
    )


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
