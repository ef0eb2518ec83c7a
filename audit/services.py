"""``record_event`` and ``append_events``: the one way anything in the portal writes audit
events.

``append_events`` appends events to one chain with one lock of the chain head, one INSERT,
one move of the head and one count upsert per hour (and per row of the volume rollup), inside
the caller's transaction; a writer with hundreds of events in hand (the re-encryption job
records every KMS call of a batch before its checkpoint) passes them all at once.
``record_event`` is the same for one event. Either way: consecutive sequence numbers, each
link's ``prev_hash`` the previous link's hash (``audit.chain``), the hourly counts
(``audit.counts``, ``audit.volume``) and a ``post_save`` signal per event (the webhook outbox).
"""

import uuid
from collections.abc import Iterable, Mapping

from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.utils import timezone

from audit.canonical import NotCanonicalizable
from audit.chain import CURRENT_HASH_FORMAT, chain_name_for, link_hash_of_bytes, record_bytes
from audit.counts import count_events

# Chain verification lives with the digests (it honours retention bases and signed heads).
from audit.digests import verify_all_chains, verify_chain  # noqa: F401, I001
from audit.models import AuditEvent, ChainHead
from audit.volume import count_volume
from core.request_id import current_request_id

EVENT_VERSION = "1.09"
PORTAL_EVENT_SOURCE = "byok.portal.vendor.example"
PORTAL_USER_AGENT = "byok-portal"


class UnstorableRecord(NotCanonicalizable):
    """The record cannot be stored and hashed faithfully; nothing was written."""


def user_identity_for(user=None, *, kind: str | None = None, system: str | None = None) -> dict:
    """A CloudTrail ``userIdentity`` for a portal user, or for one of the vendor's own systems."""
    if user is not None and getattr(user, "is_authenticated", False):
        staff = user.is_staff or user.is_superuser
        return {
            "type": kind or ("VendorStaff" if staff else "PortalUser"),
            "principalId": f"user:{user.pk}",
            "userName": user.email,
        }
    if system:
        return {"type": "AWSService", "invokedBy": system}
    return {"type": kind or "Unknown"}


def principal_of(identity: dict) -> str:
    return (
        identity.get("userName")
        or identity.get("arn")
        or identity.get("invokedBy")
        or identity.get("principalId")
        or ""
    )


#: Rows per INSERT statement (PostgreSQL takes at most 65,535 parameters per statement).
INSERT_BATCH = 1000


def build_record(
    *,
    event_name: str,
    kind: str = AuditEvent.Kind.PORTAL,
    actor=None,
    user_identity: dict | None = None,
    event_source: str = PORTAL_EVENT_SOURCE,
    aws_region: str = "",
    request_parameters: dict | None = None,
    response_elements: dict | None = None,
    resources: Iterable[dict] = (),
    error_code: str = "",
    error_message: str = "",
    read_only: bool = False,
    event_type: str = "AwsApiCall",
    event_category: str = "Management",
    source_ip: str = "",
    user_agent: str = PORTAL_USER_AGENT,
    request_id: str = "",
    recipient_account_id: str = "",
    event_time=None,
    event_id: str | None = None,
    record: dict | None = None,
    imported_from: str = "",
) -> AuditEvent:
    """One event described by its parts (the keywords of ``record_event``), not yet linked
    into a chain (no organization, chain, sequence or hashes) and not saved.

    Callers describe what happened; never pass plaintext, ciphertext or key bytes. An already
    complete CloudTrail ``record`` (ingestion) may be passed instead of the parts.
    """
    if record is None:
        identity = user_identity or user_identity_for(actor)
        event_time = event_time or timezone.now()
        record = {
            "eventVersion": EVENT_VERSION,
            "userIdentity": identity,
            "eventTime": event_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": event_source,
            "eventName": event_name,
            "awsRegion": aws_region or "global",
            "sourceIPAddress": source_ip or PORTAL_EVENT_SOURCE,
            "userAgent": user_agent,
            "requestParameters": request_parameters,
            "responseElements": response_elements,
            "requestID": request_id or current_request_id() or str(uuid.uuid4()),
            "eventID": event_id or str(uuid.uuid4()),
            "readOnly": read_only,
            "resources": list(resources),
            "eventType": event_type,
            "managementEvent": event_category == "Management",
            "recipientAccountId": recipient_account_id,
            "eventCategory": event_category,
        }
        if error_code:
            record["errorCode"] = error_code
            record["errorMessage"] = error_message
    else:
        event_time = event_time or parse_event_time(record.get("eventTime"))
    identity = record.get("userIdentity") or {}
    key_arn = next(
        (
            r.get("ARN", "")
            for r in record.get("resources") or []
            if r.get("type") == "AWS::KMS::Key"
        ),
        "",
    )
    return AuditEvent(
        hash_format=CURRENT_HASH_FORMAT,
        kind=kind,
        event_id=record["eventID"],
        event_time=event_time,
        event_source=record.get("eventSource", "")[:100],
        event_name=record.get("eventName", "")[:100],
        principal=principal_of(identity)[:300],
        key_arn=key_arn[:300],
        aws_region=(record.get("awsRegion") or "")[:30],
        error_code=(record.get("errorCode") or "")[:100],
        request_id=(record.get("requestID") or "")[:100],
        record=record,
        imported_from=imported_from[:1100],
    )


def append_events(*, org, events: Iterable[Mapping]) -> list[AuditEvent]:
    """Append ``events`` (each the keyword arguments of ``record_event`` but ``org``) to
    ``org``'s chain (the vendor chain for ``None``), in order, inside the caller's
    transaction; returns the saved events.

    Every record is checked before the chain is touched: one that cannot be stored faithfully
    raises :class:`UnstorableRecord` and nothing is written.
    """
    pending = []
    for parts in events:
        event = build_record(**parts)
        try:
            body = record_bytes(event.record, hash_format=CURRENT_HASH_FORMAT)
        except NotCanonicalizable as exc:
            raise UnstorableRecord(f"The audit record cannot be stored faithfully: {exc}.") from exc
        pending.append((event, body))
    if not pending:
        return []
    chain = chain_name_for(org.pk if org is not None else None)
    with transaction.atomic():
        head, _ = ChainHead.objects.select_for_update(no_key=True).get_or_create(chain=chain)
        # get_or_create may have inserted without the lock on a brand-new chain; lock it now.
        head = ChainHead.objects.select_for_update(no_key=True).get(pk=head.pk)
        sequence, prev_hash = head.sequence, head.head_hash
        for event, body in pending:
            sequence += 1
            event.organization = org
            event.chain = chain
            event.sequence = sequence
            event.prev_hash = prev_hash
            event.hash = prev_hash = link_hash_of_bytes(
                chain=chain, sequence=sequence, prev_hash=prev_hash, body=body
            )
        saved = [event for event, _body in pending]
        using = AuditEvent.objects.db
        for event in saved:
            pre_save.send(
                sender=AuditEvent, instance=event, raw=False, using=using, update_fields=None
            )
        saved = AuditEvent.objects.bulk_create(saved, batch_size=INSERT_BATCH)
        ChainHead.objects.filter(pk=head.pk).update(sequence=sequence, head_hash=prev_hash)
        if org is not None:
            count_events(
                org_id=org.pk,
                events=(
                    (
                        e.event_time,
                        bool(e.record.get("errorCode")),
                        e.kind == AuditEvent.Kind.KEY_USAGE,
                    )
                    for e in saved
                ),
            )
            count_volume(org_id=org.pk, events=saved)
        for event in saved:  # as Model.save would: the webhook outbox writes its deliveries
            post_save.send(
                sender=AuditEvent,
                instance=event,
                created=True,
                update_fields=None,
                raw=False,
                using=using,
            )
    return saved


def record_event(*, event_name: str, org=None, **parts) -> AuditEvent:
    """Append one event to its organization's chain (the vendor chain for ``org=None``),
    inside the caller's transaction; ``parts`` are :func:`build_record`'s keywords."""
    [event] = append_events(org=org, events=[{"event_name": event_name, **parts}])
    return event


def parse_event_time(value: str | None):
    from datetime import datetime

    if not value:
        return timezone.now()
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
