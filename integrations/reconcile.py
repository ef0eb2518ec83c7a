"""The vendor's record of its calls, confirmed by the customer's own CloudTrail.

The portal records every AWS call it makes with a customer's role as a key-usage event, with
AWS's request ID (``connections.key_usage``; a refused call keeps AWS's request ID too). The
customer's trail, once imported (``integrations.ingestion``), shows the same calls from AWS's
side. For each imported event made with the vendor's role — a call of a session of the org's
BYOK role, or the vendor principal's ``AssumeRole`` of that role — this module looks up the
org's key-usage event with the same request ID and operation and writes one
:class:`~audit.models.TrailCallMatch`:

* **confirmed**: the portal has the call on record;
* **unexplained**: it has not. Someone used the vendor's role (or the vendor failed to record a
  call): the org is told at once, inside the import's transaction —
  an ``UnexplainedVendorRoleCall`` event in its audit chain (the SIEM webhook delivers it like
  every event), an e-mail to its admins after the commit, and a banner on its admins' pages
  until one of them acknowledges it (POST, audited as ``AcknowledgeUnexplainedVendorRoleCalls``).

The portal's own reads of the trail bucket are never imported (ingestion leaves them out); they
are skipped here too, in case a file that holds them arrives through another route.

botocore retries a throttled or failed attempt under a new request ID, and CloudTrail logs
each attempt: ``connections.aws`` reports every attempt AWS answered, so each one has its own
key-usage event and is confirmed like any call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.counts import count_matches
from audit.models import AuditEvent, CloudTrailSource, TrailCallMatch
from audit.services import record_event, user_identity_for
from connections.key_usage import session_arn_prefix
from connections.models import ByokConnection
from core.errors import NotAllowed
from orgs.notices import absolute_url, org_admin_emails, send_notice

RECONCILE_SYSTEM = "reconciliation.byok-portal.vendor.example"
UNEXPLAINED_EVENT = "UnexplainedVendorRoleCall"
ACKNOWLEDGE_EVENT = "AcknowledgeUnexplainedVendorRoleCalls"
_BATCH = 500  # request IDs per look-up query
_MAIL_LIST = 10  # calls listed in one e-mail
_ACK_LIST = 100  # request IDs named in one acknowledgement event


@dataclass(frozen=True)
class VendorRole:
    """How the org's BYOK role shows up in its CloudTrail."""

    role_arn: str
    account_id: str
    session_prefix: str
    trail_bucket: str

    @classmethod
    def of(cls, org) -> VendorRole | None:
        connection = ByokConnection.objects.filter(organization=org).first()
        if connection is None:
            return None
        bucket = (
            CloudTrailSource.objects.filter(organization=org).values_list("bucket", flat=True)
        ).first()
        account = connection.aws_account_id
        return cls(
            role_arn=connection.role_arn,
            account_id=account,
            session_prefix=session_arn_prefix(account_id=account, role_arn=connection.role_arn),
            trail_bucket=bucket or "",
        )

    def made(self, record: dict) -> bool:
        """Was this call made with the vendor's role (and is it not the portal's trail read)?"""
        identity = record.get("userIdentity")
        if not isinstance(identity, dict):
            return False
        if _is_session_of(identity, self):
            params = record.get("requestParameters")
            own_read = (
                record.get("eventSource") == "s3.amazonaws.com"
                and isinstance(params, dict)
                and params.get("bucketName") == self.trail_bucket
            )
            return not own_read
        return self._vendor_assumes_role(record, identity)

    def _vendor_assumes_role(self, record: dict, identity: dict) -> bool:
        if (record.get("eventSource"), record.get("eventName")) != (
            "sts.amazonaws.com",
            "AssumeRole",
        ):
            return False
        params = record.get("requestParameters")
        resources = record.get("resources") or []
        on_role = (isinstance(params, dict) and params.get("roleArn") == self.role_arn) or any(
            isinstance(r, dict) and r.get("ARN") == self.role_arn for r in resources
        )
        # In the role's account, a cross-account caller shows as its account (and, when AWS
        # names it, its ARN): the vendor's principal or a session of it.
        by_vendor = (
            identity.get("accountId") == settings.VENDOR_AWS_ACCOUNT_ID
            or identity.get("arn") == settings.VENDOR_PRINCIPAL_ARN
        )
        return on_role and by_vendor


def _is_session_of(identity: dict, role: VendorRole) -> bool:
    if str(identity.get("arn", "")).startswith(role.session_prefix):
        return True
    issuer = (identity.get("sessionContext") or {}).get("sessionIssuer")
    return (
        identity.get("type") == "AssumedRole"
        and isinstance(issuer, dict)
        and issuer.get("arn") == role.role_arn
    )


@dataclass(frozen=True)
class ReconcileResult:
    vendor_calls: int = 0
    confirmed: int = 0
    unexplained: int = 0
    already_matched: int = 0


def reconcile_imported_events(*, org, events) -> ReconcileResult:
    """Match the imported events made with the vendor's role against the portal's records.

    Called by ingestion inside the transaction that imports ``events`` (saved AuditEvent rows
    of ``org``, kind ``ingested``), so the matches and any alert commit with them or not at all.
    """
    role = VendorRole.of(org)
    if role is None:
        return ReconcileResult()
    calls = [e for e in events if isinstance(e.record, dict) and role.made(e.record)]
    if not calls:
        return ReconcileResult()
    request_ids = {e.request_id for e in calls if e.request_id}
    seen = _matched_request_ids(org, request_ids)
    recorded = match_request_ids(org=org, request_ids=request_ids - seen)
    rows: list[TrailCallMatch] = []
    skipped = 0
    for event in calls:
        if event.request_id in seen:
            skipped += 1  # a second trail record of a call already reconciled
            continue
        if event.request_id:
            seen.add(event.request_id)
        portal = recorded.get(event.request_id)
        if portal is not None and portal[1] != event.event_name:
            portal = None  # the request ID of another operation: not this call's record
        rows.append(
            TrailCallMatch(
                organization=org,
                request_id=event.request_id,
                event_name=event.event_name,
                call_time=event.event_time,
                trail_event=event,
                portal_event_id=portal[0] if portal else None,
                recorded_at=portal[2] if portal else None,
            )
        )
    TrailCallMatch.objects.bulk_create(rows, batch_size=_BATCH)
    count_matches(org_id=org.pk, matches=[(row.recorded_at, row.call_time) for row in rows])
    unexplained = [row for row in rows if row.portal_event_id is None]
    if unexplained:
        _raise_alert(org, role, unexplained)
    return ReconcileResult(
        vendor_calls=len(calls),
        confirmed=len(rows) - len(unexplained),
        unexplained=len(unexplained),
        already_matched=skipped,
    )


def match_request_ids(*, org, request_ids) -> dict[str, tuple[int, str, datetime]]:
    """request ID → (event pk, operation, time) of the org's key-usage events with that ID.

    One query per few hundred IDs, on the request-ID index.
    """
    ids = sorted(i for i in request_ids if i)
    found: dict[str, tuple[int, str, datetime]] = {}
    for start in range(0, len(ids), _BATCH):
        rows = AuditEvent.objects.filter(
            request_id__in=ids[start : start + _BATCH],
            organization=org,
            kind=AuditEvent.Kind.KEY_USAGE,
        ).values_list("request_id", "pk", "event_name", "event_time")
        for request_id, pk, name, moment in rows:
            found.setdefault(request_id, (pk, name, moment))
    return found


def _matched_request_ids(org, request_ids: set[str]) -> set[str]:
    ids = sorted(request_ids)
    found: set[str] = set()
    for start in range(0, len(ids), _BATCH):
        found.update(
            TrailCallMatch.objects.filter(
                organization=org, request_id__in=ids[start : start + _BATCH]
            ).values_list("request_id", flat=True)
        )
    return found


# --- The alert ----------------------------------------------------------------------------


def _raise_alert(org, role: VendorRole, rows: list[TrailCallMatch]) -> None:
    """An audit event per unexplained call (the webhook sends each), one e-mail per import."""
    for row in rows:
        record = row.trail_event.record
        identity = record.get("userIdentity") or {}
        record_event(
            org=org,
            event_name=UNEXPLAINED_EVENT,
            user_identity=user_identity_for(system=RECONCILE_SYSTEM),
            request_parameters={
                "requestID": row.request_id,
                "eventName": row.event_name,
                "eventSource": record.get("eventSource"),
                "eventTime": record.get("eventTime"),
                "sourceIPAddress": record.get("sourceIPAddress"),
                "awsRegion": record.get("awsRegion"),
                "callerArn": identity.get("arn") or identity.get("accountId"),
                "trailEventID": str(row.trail_event.event_id),
            },
            response_elements={
                "finding": "The portal has no record of this call made with its role.",
                "possibleMisuseOfRole": True,
            },
            resources=[
                {"type": "AWS::IAM::Role", "ARN": role.role_arn, "accountId": role.account_id}
            ],
            recipient_account_id=role.account_id,
        )
    lines = [
        f"- {row.call_time:%Y-%m-%d %H:%M:%S} UTC {row.event_name} from "
        f"{row.trail_event.record.get('sourceIPAddress') or 'an unknown address'} "
        f"(request ID {row.request_id or 'none'})"
        for row in rows[:_MAIL_LIST]
    ]
    if len(rows) > _MAIL_LIST:
        lines.append(f"- and {len(rows) - _MAIL_LIST} more")
    calls = f"{len(rows)} call{'s' if len(rows) != 1 else ''}"
    subject = f"{org}: {calls} with your BYOK role that we have no record of"
    body = (
        f"Your CloudTrail shows calls made with the role {role.role_arn} that the BYOK portal "
        "did not make, or did not record:\n"
        + "\n".join(lines)
        + "\n\nThis may be a misuse of the role. Check who can assume it (its trust policy) "
        "and where the calls came from; revoke key access if you do not trust them.\n"
        f"Details: {absolute_url('audit:list', org_id=org.pk)}?event_name={UNEXPLAINED_EVENT}\n"
    )
    recipients = org_admin_emails(org)
    transaction.on_commit(
        lambda: send_notice(subject=subject, body=body, recipients=recipients), robust=True
    )


class NothingToAcknowledge(NotAllowed):
    """No open alert (another admin acknowledged it first)."""


@transaction.atomic
def acknowledge_unexplained_calls(*, org, actor, up_to_id: int, source_ip: str = "") -> int:
    """An org admin has seen the alert: its banner goes. Calls reconciled after the page was
    shown (``id > up_to_id``) stay open. Audited, with the request IDs acknowledged."""
    rows = list(
        TrailCallMatch.objects.select_for_update(of=("self",), no_key=True)
        .filter(
            organization=org,
            portal_event__isnull=True,
            acknowledged_at__isnull=True,
            pk__lte=up_to_id,
        )
        .order_by("pk")
        .values_list("pk", "request_id")
    )
    if not rows:
        raise NothingToAcknowledge("There is no unexplained call left to acknowledge.")
    TrailCallMatch.objects.filter(pk__in=[pk for pk, _ in rows]).update(
        acknowledged_at=timezone.now(), acknowledged_by=actor
    )
    record_event(
        org=org,
        actor=actor,
        event_name=ACKNOWLEDGE_EVENT,
        source_ip=source_ip,
        request_parameters={
            "count": len(rows),
            "requestIDs": [request_id for _, request_id in rows[:_ACK_LIST]],
        },
    )
    return len(rows)
