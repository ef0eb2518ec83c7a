"""Retention: the only deletion of audit events, itself audited, keeping each chain verifiable.

Events older than ``AUDIT_RETENTION_DAYS`` (default 400) are deleted per chain, always as a
*prefix* of the chain: from the chain's base up to the last link before the first event that
is still within retention. (Ingested events carry their own CloudTrail time, so a chain's times
are not strictly increasing; an old event behind a young one waits for it.) In the same
transaction the chain head records the new base — the first link kept and the hash it points
back to — so verification starts there, and an ``AuditRetentionPurge`` event with the counts,
the cutoff and the new base is appended to the same chain. Verification insists that a chain
which does not start at the genesis has such an event naming its base.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.counts import count_matches, uncount_events
from audit.digests import RETENTION_PURGE_EVENT, org_id_of
from audit.models import AuditEvent, ChainDigest, ChainHead, TrailCallMatch, WebhookDelivery
from audit.services import record_event, user_identity_for
from audit.volume import uncount_volume

RETENTION_SYSTEM = "retention.byok-portal.vendor.example"
#: The transaction-local PostgreSQL setting the immutability trigger lets DELETE through with.
RETENTION_SETTING = "byok.audit_retention"


@dataclass(frozen=True)
class PurgeResult:
    chain: str
    deleted: int
    first_sequence: int
    last_sequence: int
    new_base_sequence: int
    cutoff: datetime
    event: AuditEvent


def retention_cutoff(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(days=settings.AUDIT_RETENTION_DAYS)


@transaction.atomic
def purge_chain(*, chain: str, cutoff: datetime, batch_size: int) -> PurgeResult | None:
    """Delete up to ``batch_size`` expired links at the start of one chain; ``None`` if none."""
    head = ChainHead.objects.select_for_update(no_key=True).get(chain=chain)
    first = head.base_sequence
    last_sequence = last_hash = None
    expired = (
        AuditEvent.objects.filter(chain=chain, sequence__gte=first, sequence__lt=first + batch_size)
        .order_by("sequence")
        .values_list("sequence", "event_time", "hash")
    )
    for sequence, event_time, link_hash in expired.iterator(chunk_size=2000):
        if event_time >= cutoff:
            break
        last_sequence, last_hash = sequence, link_hash
    if last_sequence is None:
        return None
    # Operational rows that point at the links go first (delivery log, digests of them).
    WebhookDelivery.objects.filter(event__chain=chain, event__sequence__lte=last_sequence).delete()
    # A reconciliation row goes with the first of its two events (trail call, portal record).
    matches = TrailCallMatch.objects.filter(
        Q(trail_event__chain=chain, trail_event__sequence__lte=last_sequence)
        | Q(portal_event__chain=chain, portal_event__sequence__lte=last_sequence)
    )
    for org_id in set(matches.values_list("organization_id", flat=True)):
        count_matches(
            org_id=org_id,
            matches=matches.filter(organization_id=org_id).values_list("recorded_at", "call_time"),
            sign=-1,
        )
    matches.delete()
    ChainDigest.objects.filter(chain=chain, sequence__lte=last_sequence).delete()
    purged = AuditEvent.objects.filter(chain=chain, sequence__lte=last_sequence)
    uncount_events(purged)
    uncount_volume(purged)
    with allow_retention_delete():
        deleted = purged.purge_for_retention()
    new_base = last_sequence + 1
    ChainHead.objects.filter(pk=head.pk).update(base_sequence=new_base, base_prev_hash=last_hash)
    org_id = org_id_of(chain)
    event = record_event(
        org=_organization(org_id),
        event_name=RETENTION_PURGE_EVENT,
        user_identity=user_identity_for(system=RETENTION_SYSTEM),
        request_parameters={
            "retentionDays": settings.AUDIT_RETENTION_DAYS,
            "cutoff": cutoff.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        response_elements={
            "eventsDeleted": deleted,
            "firstSequenceDeleted": first,
            "lastSequenceDeleted": last_sequence,
            "newBaseSequence": new_base,
            "newBasePrevHash": last_hash,
        },
        event_category="Management",
    )
    return PurgeResult(
        chain=chain,
        deleted=deleted,
        first_sequence=first,
        last_sequence=last_sequence,
        new_base_sequence=new_base,
        cutoff=cutoff,
        event=event,
    )


@contextmanager
def allow_retention_delete():
    """Open the PostgreSQL trigger that refuses DELETE on audit events (migration 0007) for the
    one statement of the block: a transaction-local setting, closed again right after."""
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        yield
        return
    # A failure inside rolls the savepoint back, and the setting with it.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, 'on', true)", [RETENTION_SETTING])
        yield
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, 'off', true)", [RETENTION_SETTING])


def _organization(org_id: int | None):
    if org_id is None:
        return None
    from orgs.models import Organization

    return Organization.objects.get(pk=org_id)


def purge_expired_events(*, now: datetime | None = None) -> list[PurgeResult]:
    """Daily: apply retention to every chain, in bounded batches (one transaction each)."""
    cutoff = retention_cutoff(now)
    batch_size = max(1, settings.AUDIT_RETENTION_BATCH)
    results = []
    for chain in ChainHead.objects.order_by("chain").values_list("chain", flat=True):
        while True:
            result = purge_chain(chain=chain, cutoff=cutoff, batch_size=batch_size)
            if result is None:
                break
            results.append(result)
            if result.last_sequence - result.first_sequence + 1 < batch_size:
                break
    return results
