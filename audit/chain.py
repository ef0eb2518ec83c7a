"""The per-organization hash chain: each link hashes the previous link and the whole record.

A link's hash is ``sha256(f"{chain}\n{sequence}\n{prev_hash}\n" + record bytes)``; the
record bytes depend on the link's ``hash_format`` (docs/audit-format.md):

1. Python's ``json.dumps`` text (sorted keys, no spaces, UTF-8): links written before RFC 8785.
   PostgreSQL's ``jsonb`` rewrites numbers (``1e16`` comes back as ``10000000000000000``), so
   such a link can fail to re-hash from the stored record; it stays verifiable where it can.
2. RFC 8785 canonical JSON, every number a double (``audit.canonical``): the same bytes from
   the record as written, as stored, and as any language reads it back.
"""

import hashlib
import json
from dataclasses import dataclass

from audit.canonical import NotCanonicalizable, canonical_bytes

GENESIS_HASH = "0" * 64

HASH_FORMAT_JSON_DUMPS = 1
HASH_FORMAT_RFC8785 = 2
#: The format every new link is written in.
CURRENT_HASH_FORMAT = HASH_FORMAT_RFC8785
HASH_FORMATS = (HASH_FORMAT_JSON_DUMPS, HASH_FORMAT_RFC8785)


def json_dumps_bytes(record) -> bytes:
    """Format 1: Python's json.dumps text (kept only to verify links written before format 2)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_bytes(record, *, hash_format: int) -> bytes:
    """The bytes of ``record`` that a link of ``hash_format`` hashes.

    Raises ``ValueError`` (``NotCanonicalizable`` for format 2) when the record has no such
    bytes, and for an unknown format.
    """
    if hash_format == HASH_FORMAT_RFC8785:
        return canonical_bytes(record)
    if hash_format == HASH_FORMAT_JSON_DUMPS:
        try:
            return json_dumps_bytes(record)
        except (UnicodeEncodeError, RecursionError) as exc:
            raise NotCanonicalizable(f"the record has no UTF-8 JSON text: {exc}") from exc
    raise ValueError(f"unknown hash format {hash_format!r}")


def link_hash(
    *,
    chain: str,
    sequence: int,
    prev_hash: str,
    record,
    hash_format: int = CURRENT_HASH_FORMAT,
) -> str:
    body = record_bytes(record, hash_format=hash_format)
    return link_hash_of_bytes(chain=chain, sequence=sequence, prev_hash=prev_hash, body=body)


def link_hash_of_bytes(*, chain: str, sequence: int, prev_hash: str, body: bytes) -> str:
    """The link hash over record bytes already computed (``record_bytes``)."""
    digest = hashlib.sha256()
    digest.update(f"{chain}\n{sequence}\n{prev_hash}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def link_matches(
    *, chain: str, sequence: int, prev_hash: str, record, hash_format: int, stored_hash: str
) -> bool:
    """Whether the link re-hashes to ``stored_hash``; a record with no bytes never does."""
    try:
        computed = link_hash(
            chain=chain,
            sequence=sequence,
            prev_hash=prev_hash,
            record=record,
            hash_format=hash_format,
        )
    except ValueError:
        return False
    return computed == stored_hash


def chain_name_for(org_id: int | None) -> str:
    return f"org:{org_id}" if org_id is not None else "vendor"


@dataclass(frozen=True)
class ChainBreak:
    chain: str
    sequence: int
    event_id: str | None
    problem: str

    def __str__(self) -> str:
        where = f"event {self.event_id}" if self.event_id else "the chain head"
        return f"{self.chain}: link {self.sequence} ({where}): {self.problem}"


def verify_links(
    chain: str,
    links,
    *,
    head_sequence: int,
    head_hash: str,
    first_sequence: int = 1,
    first_prev_hash: str = GENESIS_HASH,
) -> ChainBreak | None:
    """Walk ``links`` (sequence, prev_hash, hash, event_id, record, hash_format) in order; name
    the first break.

    Detects an edited record (its hash no longer matches), a deleted row (a sequence gap or a
    prev_hash that points elsewhere), an inserted row (a duplicate sequence or a broken prev
    link), and a truncated tail (the last link does not match the chain head).

    ``first_sequence``/``first_prev_hash`` are the chain's base: the genesis by default, or the
    first link that retention kept and the hash it points back to. They also let a caller check
    one stretch of a chain (from a signed digest to the head).
    """
    expected_sequence = first_sequence
    prev_hash = first_prev_hash
    for sequence, stored_prev, stored_hash, event_id, record, hash_format in links:
        if sequence != expected_sequence:
            return ChainBreak(
                chain,
                expected_sequence,
                str(event_id),
                f"expected link {expected_sequence} but found link {sequence}: "
                "an event is missing or was inserted",
            )
        if sequence > head_sequence:
            return ChainBreak(
                chain,
                sequence,
                str(event_id),
                f"lies beyond the chain head (link {head_sequence}): an event was inserted",
            )
        if stored_prev != prev_hash:
            return ChainBreak(
                chain,
                sequence,
                str(event_id),
                f"does not point to the previous link ({sequence - 1}): an event was inserted "
                "before it, or the previous one was changed",
            )
        if hash_format not in HASH_FORMATS:
            return ChainBreak(
                chain, sequence, str(event_id), f"has an unknown hash format ({hash_format})"
            )
        if not link_matches(
            chain=chain,
            sequence=sequence,
            prev_hash=prev_hash,
            record=record,
            hash_format=hash_format,
            stored_hash=stored_hash,
        ):
            return ChainBreak(
                chain, sequence, str(event_id), "the record was changed after it was written"
            )
        prev_hash = stored_hash
        expected_sequence += 1
    if expected_sequence - 1 != head_sequence:
        return ChainBreak(
            chain,
            expected_sequence,
            None,
            f"the chain head says {head_sequence} links but {expected_sequence - 1} were found",
        )
    if prev_hash != head_hash:
        return ChainBreak(
            chain,
            head_sequence,
            None,
            "the last link does not match the chain head's hash",
        )
    return None


# --- Signed digests of a chain head (shared with the stand-alone verifier, audit/verify.py) --

#: Version 1 digests sign the domain line and the RFC 8785 canonical JSON of the fields below.
#: The first implementation used Python's json.dumps there; for these values (ASCII strings,
#: integers below 2**53, null) both give the same bytes, so no digest needed a new version.
DIGEST_VERSION = 1
DIGEST_DOMAIN = b"byok-portal-audit-digest/v1\n"
#: The fields of a digest that its signature covers, in the export's spelling.
DIGEST_SIGNED_FIELDS = (
    "digestVersion",
    "chain",
    "sequence",
    "headHash",
    "signedAt",
    "keyId",
    "previousSignature",
)


def digest_message(digest: dict) -> bytes:
    """The exact bytes a digest's Ed25519 signature is made over."""
    return DIGEST_DOMAIN + canonical_bytes({k: digest.get(k) for k in DIGEST_SIGNED_FIELDS})


def public_key_id(raw_public_key: bytes) -> str:
    """A short, stable name for an Ed25519 public key: its SHA-256, first 16 hex digits."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]
