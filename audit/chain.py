"""The per-organization hash chain: each link hashes the previous link and the whole record."""

import hashlib
import json
from dataclasses import dataclass

GENESIS_HASH = "0" * 64


def canonical_json(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link_hash(*, chain: str, sequence: int, prev_hash: str, record: dict) -> str:
    digest = hashlib.sha256()
    digest.update(f"{chain}\n{sequence}\n{prev_hash}\n".encode())
    digest.update(canonical_json(record))
    return digest.hexdigest()


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


def verify_links(chain: str, links, *, head_sequence: int, head_hash: str) -> ChainBreak | None:
    """Walk ``links`` (sequence, prev_hash, hash, event_id, record) in order; name the first break.

    Detects an edited record (its hash no longer matches), a deleted row (a sequence gap or a
    prev_hash that points elsewhere), an inserted row (a duplicate sequence or a broken prev
    link), and a truncated tail (the last link does not match the chain head).
    """
    expected_sequence = 1
    prev_hash = GENESIS_HASH
    for sequence, stored_prev, stored_hash, event_id, record in links:
        if sequence != expected_sequence:
            return ChainBreak(
                chain,
                expected_sequence,
                str(event_id),
                f"expected link {expected_sequence} but found link {sequence}: "
                "an event is missing or was inserted",
            )
        if stored_prev != prev_hash:
            return ChainBreak(chain, sequence, str(event_id), "does not point to the previous link")
        if (
            link_hash(chain=chain, sequence=sequence, prev_hash=prev_hash, record=record)
            != stored_hash
        ):
            return ChainBreak(
                chain, sequence, str(event_id), "the record was changed after it was written"
            )
        prev_hash = stored_hash
        expected_sequence += 1
    if expected_sequence - 1 != head_sequence or prev_hash != head_hash:
        return ChainBreak(
            chain,
            expected_sequence,
            None,
            f"the chain head says {head_sequence} links but {expected_sequence - 1} were found",
        )
    return None
