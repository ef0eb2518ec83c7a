"""Acme's own CloudTrail in the demo: a trail bucket in moto with a day of log files, and Acme's
CloudTrail source configured and imported, so the audit page shows imported events.

The log files are what a multi-region trail writes: gzip JSON ``{"Records": [...]}`` under
``AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<ts>_<rand>
.json.gz``. Two kinds:

* **The vendor's calls** (moto has no CloudTrail, so the demo plays it): every call the portal
  made with Acme's role and recorded as key usage, written as AWS would log it — same request
  ID (moto's), operation, time, key and context — one file per region and hour of the calls.
  Imported, they show *confirmed* on the audit page (``integrations.reconcile``). Only calls
  the trail does not confirm yet are written, so a second ``make run`` adds only new calls.
* **Acme's own people** over the previous UTC day: console sign-ins, a security engineer
  looking at the key and the role, unrelated events (most of which the ``byok`` scope leaves
  out, as it would in a real account), and the portal's own reads of the trail bucket.

Deterministic (seeded by the day, region and key ARNs, or by the portal's event IDs; gzip
without a timestamp): writing the files again writes the same bytes (same ETags), so every
``make run`` is idempotent, and new keys (after a moto restart) give new files and event IDs.

``write_unexplained_call`` (the ``demo_trail_unexplained_call`` command) adds a call with the
vendor's role that the portal never made, and imports it: it shows as unexplained and raises
the alert (audit event, e-mail, banner, webhook).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import uuid
from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.utils import timezone

from audit.models import AuditEvent, CloudTrailSource, TrailCallMatch
from connections import aws
from connections.models import ByokConnection, RegionalKey
from core.locations import get_location
from demo.acme import ACME_AWS_ACCOUNT
from integrations import ingestion
from orgs.models import Organization, User

TRAIL_BUCKET = f"acme-cloudtrail-{ACME_AWS_ACCOUNT}"
TRAIL_PREFIX = f"AWSLogs/{ACME_AWS_ACCOUNT}/CloudTrail/"
_NAMESPACE = uuid.UUID("6f1c5e0a-3f57-4a8e-9b1e-0d5a1c2b7e10")
_VENDOR_IPS = ("3.91.14.202", "44.199.60.17")
_ACME_OFFICE_IP = "198.51.100.24"
_BOTO_AGENT = (
    "Boto3/1.35.36 md/Botocore#1.35.36 ua/2.0 os/linux lang/python#3.11.10 cfg/retry-mode#standard"
)
_CONSOLE_AGENT = "AWS Internal"


def trail_day() -> datetime:
    """Midnight (UTC) starting the day of log files: yesterday."""
    today = timezone.now().astimezone(UTC).date()
    return datetime.combine(today - timedelta(days=1), time(0), tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Writer:
    """Builds one region's records for one hour, deterministically."""

    def __init__(self, connection: ByokConnection, region: str, key_arn: str, hour: datetime):
        self.account = connection.aws_account_id
        self.role_arn = connection.role_arn
        self.role_name = connection.role_name
        self.region = region
        self.key_arn = key_arn
        self.hour = hour
        seed = f"{key_arn}|{region}|{hour.isoformat()}"
        self.rng = random.Random(hashlib.sha256(seed.encode()).hexdigest())  # noqa: S311
        self.counter = 0
        role_hash = hashlib.sha256(self.role_arn.encode()).hexdigest().upper()
        self.role_principal = "AROA" + role_hash[:17]

    def _uuid(self, what: str) -> str:
        self.counter += 1
        name = f"{self.key_arn}|{self.region}|{self.hour.isoformat()}|{what}|{self.counter}"
        return str(uuid.uuid5(_NAMESPACE, name))

    def _moment(self) -> datetime:
        return self.hour + timedelta(seconds=self.rng.randrange(3600))

    def _base(self, *, moment, source, name, identity, ip, agent, read_only, params=None,
              response=None, resources=None, category="Management") -> dict:  # fmt: skip
        record = {
            "eventVersion": "1.09",
            "userIdentity": identity,
            "eventTime": _iso(moment),
            "eventSource": source,
            "eventName": name,
            "awsRegion": self.region,
            "sourceIPAddress": ip,
            "userAgent": agent,
            "requestParameters": params,
            "responseElements": response,
            "requestID": self._uuid("request"),
            "eventID": self._uuid("event"),
            "readOnly": read_only,
            "eventType": "AwsApiCall",
            "managementEvent": category == "Management",
            "recipientAccountId": self.account,
            "eventCategory": category,
        }
        if resources:
            record["resources"] = resources
        if source != "signin.amazonaws.com":
            record["tlsDetails"] = {
                "tlsVersion": "TLSv1.3",
                "cipherSuite": "TLS_AES_128_GCM_SHA256",
                "clientProvidedHostHeader": f"{source.split('.')[0]}.{self.region}.amazonaws.com",
            }
        return record

    def _vendor_identity(self, moment: datetime) -> dict:
        created = moment.replace(minute=0, second=0)
        return {
            "type": "AssumedRole",
            "principalId": f"{self.role_principal}:byok-portal",
            "arn": f"arn:aws:sts::{self.account}:assumed-role/{self.role_name}/byok-portal",
            "accountId": self.account,
            "accessKeyId": "ASIA" + self._uuid("akid").replace("-", "").upper()[:16],
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": self.role_principal,
                    "arn": self.role_arn,
                    "accountId": self.account,
                    "userName": self.role_name,
                },
                "attributes": {"creationDate": _iso(created), "mfaAuthenticated": "false"},
            },
        }

    def _person(self, name: str) -> dict:
        return {
            "type": "IAMUser",
            "principalId": "AIDA" + hashlib.sha256(name.encode()).hexdigest().upper()[:17],
            "arn": f"arn:aws:iam::{self.account}:user/{name}",
            "accountId": self.account,
            "accessKeyId": "ASIA" + hashlib.sha256(name.encode()).hexdigest().upper()[20:36],
            "userName": name,
        }

    def _key_resource(self) -> list[dict]:
        return [{"accountId": self.account, "type": "AWS::KMS::Key", "ARN": self.key_arn}]

    def kms_by_vendor(self, name: str, app: str) -> dict:
        moment = self._moment()
        context = {"org": "acme", "site": "acme-secure", "app": app}
        params: dict = {"keyId": self.key_arn}
        if name in ("Decrypt", "GenerateDataKey", "Encrypt"):
            params.update(encryptionContext=context, encryptionAlgorithm="SYMMETRIC_DEFAULT")
        if name == "GenerateDataKey":
            params["keySpec"] = "AES_256"
        if name == "Decrypt":
            params.pop("keyId")  # Decrypt of a symmetric blob names the key in resources only
        return self._base(
            moment=moment,
            source="kms.amazonaws.com",
            name=name,
            identity=self._vendor_identity(moment),
            ip=self.rng.choice(_VENDOR_IPS),
            agent=_BOTO_AGENT,
            read_only=name != "GenerateDataKey",
            params=params,
            resources=self._key_resource(),
        )

    def vendor_call(self, event: AuditEvent) -> dict:
        """The trail's record of a call the portal made and recorded (``event``, key usage)."""
        portal = event.record
        moment = event.event_time
        if event.event_source == "sts.amazonaws.com":
            # In the role's account, the cross-account caller shows as the vendor's account.
            identity = {
                "type": "AWSAccount",
                "principalId": "AROAVENDORPORTALSERVICE:byok-portal",
                "accountId": settings.VENDOR_AWS_ACCOUNT_ID,
            }
        else:
            identity = self._vendor_identity(moment)
        record = self._base(
            moment=moment,
            source=event.event_source,
            name=event.event_name,
            identity=identity,
            ip=self.rng.choice(_VENDOR_IPS),
            agent=_BOTO_AGENT,
            read_only=bool(portal.get("readOnly")),
            params=portal.get("requestParameters"),
            response=portal.get("responseElements"),
            resources=portal.get("resources"),
        )
        record["requestID"] = event.request_id  # AWS's own ID of the call: what reconciles it
        record["eventID"] = str(uuid.uuid5(_NAMESPACE, f"trail|{event.event_id}"))
        for name in ("errorCode", "errorMessage"):
            if portal.get(name):
                record[name] = portal[name]
        return record

    def vendor_reads_trail(self) -> dict:
        """The portal's own ListObjects of the trail bucket (a data event; never imported)."""
        moment = self._moment()
        return self._base(
            moment=moment,
            source="s3.amazonaws.com",
            name="ListObjects",
            identity=self._vendor_identity(moment),
            ip=self.rng.choice(_VENDOR_IPS),
            agent=_BOTO_AGENT,
            read_only=True,
            params={"bucketName": TRAIL_BUCKET, "prefix": TRAIL_PREFIX, "list-type": "2"},
            resources=[{"type": "AWS::S3::Object", "ARNPrefix": f"arn:aws:s3:::{TRAIL_BUCKET}/"}],
            category="Data",
        )

    def console_login(self, user: str) -> dict:
        moment = self._moment()
        record = self._base(
            moment=moment,
            source="signin.amazonaws.com",
            name="ConsoleLogin",
            identity=self._person(user),
            ip=_ACME_OFFICE_IP,
            agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15",
            read_only=False,
            response={"ConsoleLogin": "Success"},
        )
        record["additionalEventData"] = {"MFAUsed": "Yes", "MobileVersion": "No"}
        record["eventType"] = "AwsConsoleSignIn"
        return record

    def security_engineer_describes_key(self) -> dict:
        moment = self._moment()
        return self._base(
            moment=moment,
            source="kms.amazonaws.com",
            name="DescribeKey",
            identity=self._person("sec-engineer"),
            ip=_ACME_OFFICE_IP,
            agent=_CONSOLE_AGENT,
            read_only=True,
            params={"keyId": self.key_arn},
            resources=self._key_resource(),
        )

    def security_engineer_gets_role(self) -> dict:
        moment = self._moment()
        return self._base(
            moment=moment,
            source="iam.amazonaws.com",
            name="GetRole",
            identity=self._person("sec-engineer"),
            ip=_ACME_OFFICE_IP,
            agent=_CONSOLE_AGENT,
            read_only=True,
            params={"roleName": self.role_name},
        )

    def unrelated(self) -> dict:
        moment = self._moment()
        name, source, params = self.rng.choice(
            [
                ("DescribeInstances", "ec2.amazonaws.com", {"maxResults": 100}),
                ("ListBuckets", "s3.amazonaws.com", {"Host": "s3.amazonaws.com"}),
                ("GetBucketAcl", "s3.amazonaws.com", {"bucketName": TRAIL_BUCKET, "acl": ""}),
                ("ListKeys", "kms.amazonaws.com", {"limit": 100}),
            ]
        )
        identity = self._person(self.rng.choice(["ops-deploy", "sec-engineer"]))
        if name == "GetBucketAcl":
            identity = {"type": "AWSService", "invokedBy": "cloudtrail.amazonaws.com"}
        return self._base(
            moment=moment,
            source=source,
            name=name,
            identity=identity,
            ip="cloudtrail.amazonaws.com" if name == "GetBucketAcl" else _ACME_OFFICE_IP,
            agent=_CONSOLE_AGENT,
            read_only=True,
            params=params,
        )

    def records(self) -> list[dict]:
        """Acme's people's events of the hour (the vendor's calls come from its own record)."""
        rng = self.rng
        records = []
        if self.hour.hour % 4 == 1:
            records.append(self.vendor_reads_trail())
        if self.hour.hour == 14 and self.region == "us-east-1":
            records.append(self.console_login("sec-engineer"))
            records.append(self.security_engineer_describes_key())
            records.append(self.security_engineer_gets_role())
        if rng.random() < 0.4:
            records.append(self.unrelated())
        records.sort(key=lambda r: r["eventTime"])
        return records

    def file_key(self) -> str:
        stamp = (self.hour + timedelta(minutes=5)).strftime("%Y%m%dT%H%MZ")
        return self.key_for(stamp)

    def key_for(self, stamp: str, salt: str = "") -> str:
        seed = f"{self.key_arn}|{stamp}" + (f"|{salt}" if salt else "")
        rand = hashlib.sha256(seed.encode()).hexdigest()[:16].upper()
        day = self.hour.strftime("%Y/%m/%d")
        return (
            f"{TRAIL_PREFIX}{self.region}/{day}/"
            f"{self.account}_CloudTrail_{self.region}_{stamp}_{rand}.json.gz"
        )


def _gzip_log(records: list[dict]) -> bytes:
    body = json.dumps({"Records": records}, separators=(",", ":")).encode()
    return gzip.compress(body, mtime=0)


def log_files(connection: ByokConnection, day: datetime) -> dict[str, bytes]:
    """S3 key → gzip bytes: Acme's people's events, per region of the connection and hour of
    ``day`` (an hour without events has no file, as in CloudTrail)."""
    keys = {
        k.region: k.key_arn
        for k in RegionalKey.objects.filter(connection=connection, is_current=True)
    }
    files = {}
    for region, key_arn in sorted(keys.items()):
        for hour in range(24):
            writer = _Writer(connection, region, key_arn, day + timedelta(hours=hour))
            records = writer.records()
            if records:
                files[writer.file_key()] = _gzip_log(records)
    return files


def vendor_call_files(connection: ByokConnection) -> dict[str, bytes]:
    """S3 key → gzip bytes: the trail's record of every call the portal made with the role and
    recorded, that the imported trail does not confirm yet; per region and hour of the calls."""
    org = connection.organization
    confirmed = TrailCallMatch.objects.filter(organization=org, portal_event__isnull=False).values(
        "portal_event_id"
    )
    calls = (
        AuditEvent.objects.filter(organization=org, kind=AuditEvent.Kind.KEY_USAGE)
        .exclude(request_id="")
        .exclude(pk__in=confirmed)
        .order_by("sequence")
    )
    groups: dict[tuple[str, datetime], list[AuditEvent]] = {}
    for event in calls.iterator(chunk_size=500):
        hour = event.event_time.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        groups.setdefault((event.aws_region or "us-east-1", hour), []).append(event)
    files = {}
    for (region, hour), events in sorted(groups.items()):
        writer = _Writer(connection, region, f"vendor-calls|{events[0].event_id}", hour)
        stamp = max(e.event_time for e in events).astimezone(UTC) + timedelta(minutes=5)
        key = writer.key_for(stamp.strftime("%Y%m%dT%H%MZ"))
        files[key] = _gzip_log([writer.vendor_call(event) for event in events])
    return files


def _ensure_bucket(s3, region: str) -> None:
    try:
        s3.head_bucket(Bucket=TRAIL_BUCKET)
        return
    except s3.exceptions.ClientError:
        pass
    kwargs = {} if region == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": region}
    }  # fmt: skip
    s3.create_bucket(Bucket=TRAIL_BUCKET, **kwargs)


def _existing_keys(s3, prefix: str) -> set[str]:
    found = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=TRAIL_BUCKET, Prefix=prefix):
        found.update(o["Key"] for o in page.get("Contents") or [])
    return found


def write_trail(connection: ByokConnection, region: str, day: datetime) -> int:
    """Put the day's log files and the vendor's unconfirmed calls in the trail bucket (files
    already there are left alone)."""
    return _write_files(
        connection, region, {**log_files(connection, day), **vendor_call_files(connection)}
    )


def _write_files(connection: ByokConnection, region: str, files: dict[str, bytes]) -> int:
    s3 = aws.customer_admin_client("s3", region, connection.aws_account_id)
    _ensure_bucket(s3, region)
    existing = _existing_keys(s3, TRAIL_PREFIX)
    written = 0
    for key, body in files.items():
        if key in existing:
            continue
        s3.put_object(
            Bucket=TRAIL_BUCKET, Key=key, Body=body, ContentType="application/json",
            ContentEncoding="gzip", ServerSideEncryption="AES256",
        )  # fmt: skip
        written += 1
    return written


def seed_demo_trail() -> str:
    """Acme's trail bucket, its CloudTrail source and an import. Idempotent."""
    org = Organization.objects.get(name="Acme Corp")
    connection = ByokConnection.objects.filter(organization=org).first()
    if connection is None or not connection.keys.filter(is_current=True).exists():
        return "Acme's CloudTrail: skipped (Acme has no BYOK keys)."
    region = get_location(connection.location).primary_region
    written = write_trail(connection, region, trail_day())
    source = CloudTrailSource.objects.filter(organization=org).first()
    wanted = {"bucket": TRAIL_BUCKET, "prefix": TRAIL_PREFIX, "region": region}
    if (
        source is None
        or any(getattr(source, f) != v for f, v in wanted.items())
        or not (source.enabled)
    ):
        source = ingestion.configure_cloudtrail_source(
            org=org,
            actor=User.objects.get(email="admin@acme.example"),
            scope=CloudTrailSource.Scope.BYOK,
            enabled=True,
            **wanted,
        )
    run = ingestion.ingest_source(source_id=source.pk)
    if run.error:
        return f"Acme's CloudTrail s3://{TRAIL_BUCKET}/{TRAIL_PREFIX}: import failed: {run.error}"
    # The import itself assumed the role: CloudTrail logs that call too. Deliver it and import
    # again (the session is cached now: no new call), so every call so far is confirmed.
    if _write_files(connection, region, vendor_call_files(connection)):
        written += 1
        again = ingestion.ingest_source(source_id=source.pk)
        run.files_imported += again.files_imported
        run.records_imported += again.records_imported
    total = AuditEvent.objects.filter(organization=org, kind=AuditEvent.Kind.INGESTED).count()
    confirmed = TrailCallMatch.objects.filter(organization=org, portal_event__isnull=False)
    return (
        f"Acme's CloudTrail s3://{TRAIL_BUCKET}/{TRAIL_PREFIX} ({region}): {written} new log "
        f"files, {run.files_imported} imported now ({run.records_imported} events); "
        f"{total} imported events in Acme's audit log, {confirmed.count()} of the vendor's "
        "calls confirmed by it."
    )


#: Where the demo's unexplained call comes from: not one of the vendor's addresses.
UNEXPLAINED_CALL_IP = "203.0.113.66"


def write_unexplained_call(*, now: datetime | None = None) -> str:
    """A Decrypt with the vendor's role that the portal never made, in a new log file of Acme's
    trail, imported at once: it shows as unexplained and raises the alert."""
    org = Organization.objects.get(name="Acme Corp")
    connection = ByokConnection.objects.filter(organization=org).first()
    source = CloudTrailSource.objects.filter(organization=org).first()
    key = RegionalKey.objects.filter(connection=connection, is_current=True).first()
    if connection is None or source is None or key is None:
        raise ValueError("Acme has no BYOK keys or CloudTrail source: run seed_demo first.")
    moment = (now or timezone.now()).astimezone(UTC).replace(microsecond=0)
    writer = _Writer(connection, key.region, key.key_arn, moment.replace(minute=0, second=0))
    record = writer.kms_by_vendor("Decrypt", "jira")
    # A new call each time: AWS's own IDs, the time now, an address that is not the vendor's.
    record.update(
        eventTime=_iso(moment),
        sourceIPAddress=UNEXPLAINED_CALL_IP,
        requestID=str(uuid.uuid4()),
        eventID=str(uuid.uuid4()),
    )
    stamp = (moment + timedelta(minutes=5)).strftime("%Y%m%dT%H%MZ")
    file_key = writer.key_for(stamp, salt=record["eventID"])
    _write_files(connection, source.region, {file_key: _gzip_log([record])})
    run = ingestion.ingest_source(source_id=source.pk)
    if run.error:
        raise ValueError(f"The import failed: {run.error}")
    match = TrailCallMatch.objects.filter(organization=org, request_id=record["requestID"]).first()
    state = "unexplained" if match is not None and not match.is_confirmed else "not reconciled"
    return (
        f"Wrote a Decrypt with {connection.role_arn} from {UNEXPLAINED_CALL_IP} at "
        f"{record['eventTime']} (request ID {record['requestID']}) to "
        f"s3://{source.bucket}/{source.prefix} and imported it: {state}."
    )
