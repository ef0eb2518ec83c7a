"""Trust: signed digests of each chain head, exports that carry them, and chain verification.

Like CloudTrail's log file integrity validation: every hour the portal signs, with its own
Ed25519 key (``AUDIT_SIGNING_KEY``), a digest of each chain whose head moved — "chain C had N
links, the last one hashing to H, at time T" — and each digest also signs the previous
digest's signature. The public key is published at ``/audit/public-key.pem``; JSON exports
carry the digests covering their events, and ``python -m audit.verify`` checks an export
offline (chain intact, signatures valid, no event missing between two digests).

Before signing, the links added since the last digest are re-hashed: a chain that was
tampered with is never signed, and staff are alerted instead.

Every verification is counted (``core.metrics``: ``byok_audit_chain_verifications_total`` by
kind and result); the daily verification of every chain also sets how many were broken and
when it ran.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import mail_admins, send_mail
from django.db import transaction
from django.utils import timezone

from audit.chain import (
    DIGEST_VERSION,
    GENESIS_HASH,
    ChainBreak,
    chain_name_for,
    digest_message,
    public_key_id,
    verify_links,
)
from audit.models import AuditEvent, ChainDigest, ChainHead
from audit.provenance import provenance_of
from core import metrics

log = logging.getLogger(__name__)

#: The event retention writes when it deletes the oldest links of a chain (audit/retention.py).
RETENTION_PURGE_EVENT = "AuditRetentionPurge"


class SigningKeyMissing(Exception):
    """``AUDIT_SIGNING_KEY`` is not set: digests cannot be signed, the public key not served."""


# --- The portal's signing key -------------------------------------------------------------


@lru_cache(maxsize=4)
def _load_private_key(value: str) -> Ed25519PrivateKey:
    value = value.strip()
    if value.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(value.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ImproperlyConfigured("AUDIT_SIGNING_KEY must be an Ed25519 private key.")
        return key
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise ImproperlyConfigured(
            "AUDIT_SIGNING_KEY must be a PEM private key or base64 of 32 raw bytes."
        ) from exc
    if len(raw) != 32:
        raise ImproperlyConfigured("AUDIT_SIGNING_KEY must decode to 32 bytes (Ed25519 seed).")
    return Ed25519PrivateKey.from_private_bytes(raw)


def signing_key() -> Ed25519PrivateKey:
    if not settings.AUDIT_SIGNING_KEY:
        raise SigningKeyMissing("AUDIT_SIGNING_KEY is not set: audit digests cannot be signed.")
    return _load_private_key(settings.AUDIT_SIGNING_KEY)


def public_key() -> Ed25519PublicKey:
    return signing_key().public_key()


def public_key_pem() -> str:
    return (
        public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def key_id_of(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return public_key_id(raw)


def current_key_id() -> str:
    return key_id_of(public_key())


# --- Digests --------------------------------------------------------------------------------


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def digest_document(digest: ChainDigest) -> dict:
    """A digest as exports carry it (and as its signature covers it, minus ``signature``)."""
    return {
        "digestVersion": DIGEST_VERSION,
        "chain": digest.chain,
        "sequence": digest.sequence,
        "headHash": digest.head_hash,
        "signedAt": _utc_text(digest.signed_at),
        "keyId": digest.key_id,
        "previousSignature": digest.previous_signature or None,
        "signature": digest.signature,
    }


def org_id_of(chain: str) -> int | None:
    return int(chain.split(":", 1)[1]) if chain.startswith("org:") else None


class ChainTampered(Exception):
    def __init__(self, brk: ChainBreak):
        super().__init__(str(brk))
        self.brk = brk


@dataclass
class DigestRun:
    signed: list[ChainDigest] = field(default_factory=list)
    unchanged: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)


def _links(chain: str, *, first: int, last: int | None = None):
    qs = AuditEvent.objects.filter(chain=chain, sequence__gte=first)
    if last is not None:
        qs = qs.filter(sequence__lte=last)
    return (
        qs.order_by("sequence")
        .values_list("sequence", "prev_hash", "hash", "event_id", "record", "hash_format")
        .iterator(chunk_size=2000)
    )


def sign_chain_digest(*, chain: str, now: datetime | None = None) -> ChainDigest | None:
    """Sign the chain's head if it moved since the last digest; ``None`` when it did not.

    Raises :class:`ChainTampered` (and signs nothing) when the links added since the last
    digest do not verify, or the head contradicts the last signed digest.
    """
    key = signing_key()
    head = ChainHead.objects.get(chain=chain)  # a committed snapshot: links up to it are fixed
    last = ChainDigest.objects.filter(chain=chain).order_by("-sequence").first()
    if head.sequence == 0:
        return None
    if last is not None and last.sequence >= head.sequence:
        if last.sequence == head.sequence and last.head_hash == head.head_hash:
            return None
        metrics.chain_verified("digest", broken=True)
        raise ChainTampered(
            ChainBreak(
                chain,
                head.sequence,
                None,
                f"the chain head ({head.sequence}) contradicts the digest signed at "
                f"{_utc_text(last.signed_at)} (link {last.sequence})",
            )
        )
    if last is not None and last.sequence + 1 >= head.base_sequence:
        first, first_prev = last.sequence + 1, last.head_hash
    else:
        first, first_prev = head.base_sequence, head.base_prev_hash
    brk = verify_links(
        chain,
        _links(chain, first=first, last=head.sequence),
        head_sequence=head.sequence,
        head_hash=head.head_hash,
        first_sequence=first,
        first_prev_hash=first_prev,
    )
    metrics.chain_verified("digest", broken=brk is not None)
    if brk is not None:
        raise ChainTampered(brk)
    with transaction.atomic():
        # Serialize signers of one chain, so digests never fork.
        ChainHead.objects.select_for_update(no_key=True).filter(pk=head.pk).first()
        latest = ChainDigest.objects.filter(chain=chain).order_by("-sequence").first()
        if (latest and latest.pk) != (last and last.pk):
            return None  # another signer got here first
        digest = ChainDigest(
            chain=chain,
            organization_id=org_id_of(chain),
            sequence=head.sequence,
            head_hash=head.head_hash,
            previous_signature=last.signature if last is not None else "",
            signed_at=(now or timezone.now()).replace(microsecond=0),
            key_id=key_id_of(key.public_key()),
        )
        document = digest_document(digest)
        digest.signature = base64.b64encode(key.sign(digest_message(document))).decode()
        digest.save()
    return digest


def sign_chain_digests(*, now: datetime | None = None) -> DigestRun:
    """Hourly: a signed digest of every chain whose head moved. Tampered chains are reported."""
    run = DigestRun()
    for chain in ChainHead.objects.order_by("chain").values_list("chain", flat=True):
        try:
            digest = sign_chain_digest(chain=chain, now=now)
        except ChainTampered as exc:
            log.error("Audit chain not signed, it does not verify: %s", exc.brk)
            run.breaks.append(exc.brk)
            continue
        if digest is None:
            run.unchanged += 1
        else:
            run.signed.append(digest)
    if run.breaks:
        alert_staff(
            subject="Audit chain integrity: digests withheld",
            message="These audit chains did not verify, so their heads were not signed:\n\n"
            + "\n".join(f"- {b}" for b in run.breaks),
        )
    return run


def latest_digest_of(org) -> ChainDigest | None:
    return ChainDigest.objects.filter(chain=chain_name_for(org.pk)).order_by("-sequence").first()


# --- Exports --------------------------------------------------------------------------------


def digests_for_export(*, org, events_first_sequence: int, events_last_sequence: int) -> list[dict]:
    """The signed digests whose link lies within an export's sequence range, oldest first."""
    digests = ChainDigest.objects.filter(
        chain=chain_name_for(org.pk),
        sequence__gte=events_first_sequence,
        sequence__lte=events_last_sequence,
    ).order_by("sequence")
    return [digest_document(d) for d in digests]


def chain_entry(event: AuditEvent) -> dict:
    """An event's link as exports carry it (docs/audit-format.md)."""
    return {
        "eventID": str(event.event_id),
        "sequence": event.sequence,
        "prevHash": event.prev_hash,
        "hash": event.hash,
        "hashFormat": event.hash_format,
        "provenance": provenance_of(kind=event.kind, imported_from=event.imported_from),
    }


#: The beat entry that signs digests (``CELERY_BEAT_SCHEDULE``).
DIGEST_BEAT_ENTRY = "audit-sign-digests"


def digest_interval() -> timedelta | None:
    """How often digests are signed, when the beat schedule says so as an interval."""
    schedule = settings.CELERY_BEAT_SCHEDULE[DIGEST_BEAT_ENTRY]["schedule"]
    if isinstance(schedule, timedelta):
        return schedule
    if isinstance(schedule, int | float):
        return timedelta(seconds=schedule)
    run_every = getattr(schedule, "run_every", None)  # celery.schedules.schedule
    return run_every if isinstance(run_every, timedelta) else None


def digest_schedule(*, now: datetime | None = None) -> dict:
    """When the next digest is expected, for exports: the verifier tells the reader.

    The beat runs every interval after its last run; the newest digest of any chain marks a
    run, so the next one is the first whole interval after it that lies ahead (an estimate: a
    run that signed nothing, because no chain moved, leaves no mark; with no digest at all,
    one interval from now).
    """
    now = (now or timezone.now()).replace(microsecond=0)
    interval = digest_interval()
    if interval is None or interval.total_seconds() <= 0:
        return {"intervalSeconds": None, "nextDigestAt": None}
    last_run = (
        ChainDigest.objects.filter(signed_at__lte=now)
        .order_by("-pk")  # the newest digest, by the primary key's index
        .values_list("signed_at", flat=True)
        .first()
    )
    next_run = last_run or now
    periods = (now - next_run) // interval + 1
    next_run = next_run + periods * interval
    return {
        "intervalSeconds": int(interval.total_seconds()),
        "nextDigestAt": _utc_text(next_run),
    }


def export_document(
    *, org, first_sequence: int | None = None, last_sequence: int | None = None
) -> dict:
    """An unfiltered JSON export of one org's chain (or a stretch of it), oldest first.

    The same shape as the audit log's ``?format=json`` export (``audit/export.py``):
    ``{"Records", "ChainName", "Chain", "Digests", "DigestSchedule"}``. For tests and support.
    """
    events = AuditEvent.objects.filter(chain=chain_name_for(org.pk)).order_by("sequence")
    if first_sequence is not None:
        events = events.filter(sequence__gte=first_sequence)
    if last_sequence is not None:
        events = events.filter(sequence__lte=last_sequence)
    events = list(events)
    digests = (
        digests_for_export(
            org=org,
            events_first_sequence=events[0].sequence,
            events_last_sequence=events[-1].sequence,
        )
        if events
        else []
    )
    return {
        "Records": [e.record for e in events],
        "ChainName": chain_name_for(org.pk),
        "Chain": [chain_entry(e) for e in events],
        "Digests": digests,
        "DigestSchedule": digest_schedule(),
    }


# --- Verification in the portal (the command and the daily task) ---------------------------


def _check_base(head: ChainHead) -> ChainBreak | None:
    """A chain that does not start at the genesis must say why: a retention purge event."""
    if head.base_sequence == 1 and head.base_prev_hash == GENESIS_HASH:
        return None
    purge = (
        AuditEvent.objects.filter(
            chain=head.chain, event_name=RETENTION_PURGE_EVENT, sequence__gte=head.base_sequence
        )
        .order_by("-sequence")
        .values_list("record", flat=True)
        .first()
    )
    claimed = (purge or {}).get("responseElements") or {}
    if (
        claimed.get("newBaseSequence") != head.base_sequence
        or claimed.get("newBasePrevHash") != head.base_prev_hash
    ):
        return ChainBreak(
            head.chain,
            head.base_sequence,
            None,
            f"the chain starts at link {head.base_sequence}, but no retention purge event "
            "accounts for the links before it",
        )
    return None


def _check_digest_signatures(chain: str, digests: list[ChainDigest]) -> ChainBreak | None:
    try:
        key = public_key()
    except SigningKeyMissing:
        return None
    key_id = key_id_of(key)
    previous = None
    for digest in digests:
        if previous is not None and digest.previous_signature != previous.signature:
            return ChainBreak(
                chain,
                digest.sequence,
                None,
                f"the digest signed at {_utc_text(digest.signed_at)} does not follow the one "
                f"signed at {_utc_text(previous.signed_at)}: a digest is missing or was replaced",
            )
        previous = digest
        if digest.key_id != key_id:
            continue  # signed by a retired key: the stored hash still has to match below
        try:
            key.verify(base64.b64decode(digest.signature), digest_message(digest_document(digest)))
        except (InvalidSignature, ValueError):
            return ChainBreak(
                chain,
                digest.sequence,
                None,
                f"the digest signed at {_utc_text(digest.signed_at)} has an invalid signature",
            )
    return None


def verify_chain(chain: str) -> ChainBreak | None:
    """Re-hash every link of one chain from its base, and check it against its signed digests.

    A rewritten chain (every hash recomputed after an edit) still verifies link by link; the
    signed digests catch it: the link a digest names must still hash to the signed value.
    """
    brk = _verify_chain(chain)
    metrics.chain_verified("full", broken=brk is not None)
    return brk


def _verify_chain(chain: str) -> ChainBreak | None:
    # The newest digest is read before the head: a head behind it was truncated (heads only
    # grow), whatever was appended or signed meanwhile.
    newest = ChainDigest.objects.filter(chain=chain).order_by("-sequence").first()
    head = ChainHead.objects.filter(chain=chain).first()
    if head is None:
        return None
    if newest is not None and newest.sequence > head.sequence:
        return ChainBreak(
            chain,
            head.sequence + 1,
            None,
            f"links up to {newest.sequence} were signed at {_utc_text(newest.signed_at)} "
            f"but the chain ends at link {head.sequence}: its newest events were removed",
        )
    brk = _check_base(head)
    if brk is not None:
        return brk
    digests = list(
        ChainDigest.objects.filter(
            chain=chain, sequence__gte=head.base_sequence, sequence__lte=head.sequence
        ).order_by("sequence")
    )
    brk = _check_digest_signatures(chain, digests)
    if brk is not None:
        return brk
    signed = {d.sequence: d for d in digests}
    mismatch: list[ChainBreak] = []

    def links_checked_against_digests():
        previous = None  # checked when the next link is asked for: verify_links accepted it
        # Up to the head as read above: events appended meanwhile are checked next time.
        for link in _links(chain, first=head.base_sequence, last=head.sequence):
            if previous is not None and _digest_mismatch(previous, signed, mismatch):
                return
            previous = link
            yield link
        if previous is not None:
            _digest_mismatch(previous, signed, mismatch)

    brk = verify_links(
        chain,
        links_checked_against_digests(),
        head_sequence=head.sequence,
        head_hash=head.head_hash,
        first_sequence=head.base_sequence,
        first_prev_hash=head.base_prev_hash,
    )
    if mismatch and (brk is None or brk.sequence >= mismatch[0].sequence):
        return mismatch[0]
    if brk is None:
        brk = _link_beyond_head(chain)
    return brk


def _link_beyond_head(chain: str) -> ChainBreak | None:
    """A row past the chain head was inserted: an append moves the head in its transaction.

    The rows are read before the head, so an append committing in between is not mistaken
    for an insertion.
    """
    last = (
        AuditEvent.objects.filter(chain=chain)
        .order_by("-sequence")
        .values_list("sequence", "event_id")
        .first()
    )
    head_sequence = ChainHead.objects.filter(chain=chain).values_list("sequence", flat=True)[0]
    if last is None or last[0] <= head_sequence:
        return None
    first_extra = (
        AuditEvent.objects.filter(chain=chain, sequence__gt=head_sequence)
        .order_by("sequence")
        .values_list("sequence", "event_id")
        .first()
    )
    sequence, event_id = first_extra or last
    return ChainBreak(
        chain,
        sequence,
        str(event_id),
        f"lies beyond the chain head (link {head_sequence}): an event was inserted",
    )


def _digest_mismatch(link, signed: dict, found: list) -> bool:
    sequence, _prev, stored_hash, event_id, _record, _format = link
    digest = signed.get(sequence)
    if digest is not None and digest.head_hash != stored_hash:
        found.append(
            ChainBreak(
                digest.chain,
                sequence,
                str(event_id),
                f"does not match the digest signed at {_utc_text(digest.signed_at)}: "
                "the chain was rewritten",
            )
        )
        return True
    return False


def verify_all_chains(org_id: int | None = None) -> list[ChainBreak]:
    chains = ChainHead.objects.order_by("chain").values_list("chain", flat=True)
    if org_id is not None:
        chains = chains.filter(chain=chain_name_for(org_id))
    breaks = [brk for brk in (verify_chain(c) for c in chains) if brk is not None]
    if org_id is None:  # every chain: what the operator's alert looks at
        metrics.AUDIT_CHAINS_BROKEN.set(len(breaks))
        metrics.AUDIT_CHAINS_LAST_VERIFIED.set(time.time())
    return breaks


def verify_and_alert(org_id: int | None = None) -> list[ChainBreak]:
    """Daily: verify every chain; e-mail support staff and the site admins on a break."""
    breaks = verify_all_chains(org_id)
    if breaks:
        alert_staff(
            subject=f"Audit chain integrity: {len(breaks)} broken chain(s)",
            message="The daily audit chain verification found these breaks (first broken link "
            "of each chain):\n\n"
            + "\n".join(f"- {b}" for b in breaks)
            + "\n\nRun `manage.py verify_audit_chain` to re-check.",
        )
    return breaks


def alert_staff(*, subject: str, message: str) -> list[str]:
    """E-mail the Support staff group's active users, and ``ADMINS``. Returns the recipients."""
    from orgs.staff_roles import SUPPORT_STAFF

    log.error("%s\n%s", subject, message)
    recipients = sorted(
        set(
            get_user_model()
            .objects.filter(is_active=True, groups__name=SUPPORT_STAFF)
            .exclude(email="")
            .values_list("email", flat=True)
        )
    )
    if recipients:
        send_mail(f"[BYOK Portal] {subject}", message, settings.DEFAULT_FROM_EMAIL, recipients)
    mail_admins(subject, message)
    return recipients
