"""Check a BYOK Portal audit export offline.

Usage: ``python -m audit.verify EXPORT.json --public-key KEY``

Stand-alone on purpose: this file needs only the Python standard library and ``cryptography``
(no Django, no database, no network), so a customer can copy it next to an export and run it.
KEY is the portal's public key as published at ``/audit/public-key.pem`` (PEM), or the base64
of its 32 raw bytes.

An export is ``{"Records": [CloudTrail records], "ChainName": "org:<id>", "Chain": [{"eventID",
"sequence", "prevHash", "hash"}], "Digests": [signed digests]}`` (``.json`` or ``.json.gz``;
``ChainName`` may be left out when digests name the chain). The verifier checks:

1. Chain intact: every record hashes to its link's ``hash`` (so no record was edited), every
   link points to the one before it, the records and chain entries are in the same order with
   consecutive sequence numbers (nothing removed, inserted or re-ordered).
2. Signatures valid: every digest is signed by KEY (Ed25519) — a digest signed by another key
   is rejected — and consecutive digests are linked by their signatures.
3. No event missing between two digests: the link each digest names is in the export and
   hashes to the signed value, so every event up to the newest digest is vouched for.

Links after the newest digest are intact but not yet signed (digests are made hourly); the
report says so. Exit status: 0 when everything checks out, 1 when anything does not (each
problem is named), 2 for unusable input.

``--allow-gaps`` accepts a *filtered* export (missing sequence numbers are then expected):
each record is still checked against its own link, but completeness cannot be.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# --- The portal's hashing and signing formats (kept identical to audit/chain.py) -------------

GENESIS_HASH = "0" * 64
DIGEST_DOMAIN = b"byok-portal-audit-digest/v1\n"
DIGEST_SIGNED_FIELDS = (
    "digestVersion",
    "chain",
    "sequence",
    "headHash",
    "signedAt",
    "keyId",
    "previousSignature",
)


def canonical_json(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link_hash(*, chain: str, sequence: int, prev_hash: str, record: dict) -> str:
    digest = hashlib.sha256()
    digest.update(f"{chain}\n{sequence}\n{prev_hash}\n".encode())
    digest.update(canonical_json(record))
    return digest.hexdigest()


def digest_message(digest: dict) -> bytes:
    return DIGEST_DOMAIN + canonical_json({k: digest.get(k) for k in DIGEST_SIGNED_FIELDS})


def public_key_id(raw_public_key: bytes) -> str:
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


# --- Verification ------------------------------------------------------------------------------


class UnusableInput(Exception):
    """The export or the key cannot be read at all (exit status 2)."""


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    events: int = 0
    digests: int = 0
    key_id: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def load_public_key(text: str) -> Ed25519PublicKey:
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as exc:
        raise UnusableInput(f"Cannot read the public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise UnusableInput("The public key is not an Ed25519 key.")
    return key


def load_export(path: Path) -> dict:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise UnusableInput(f"{path} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("Records"), list):
        raise UnusableInput(f'{path} is not an audit export: no "Records" list.')
    if not isinstance(document.get("Chain"), list):
        raise UnusableInput(f'{path} has no "Chain": it cannot be verified.')
    return document


def _chain_name(document: dict, chain_arg: str | None) -> str:
    names = {document.get("ChainName")}
    names |= {e.get("chain") for e in document["Chain"] if isinstance(e, dict)}
    names |= {d.get("chain") for d in document.get("Digests") or [] if isinstance(d, dict)}
    names.discard(None)
    if chain_arg:
        names.add(chain_arg)
    if len(names) > 1:
        raise UnusableInput(f"The export mixes chains: {', '.join(sorted(names))}.")
    if not names:
        raise UnusableInput(
            "The export has no digests, so its chain is unknown: pass --chain org:<id>."
        )
    return names.pop()


def verify_export(
    document: dict, key: Ed25519PublicKey, *, chain: str | None = None, allow_gaps: bool = False
) -> Report:
    """Every check on one export; ``report.problems`` is empty when it verifies."""
    report = Report()
    raw_key = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    report.key_id = public_key_id(raw_key)
    chain = _chain_name(document, chain)
    links = _check_links(document, chain, report, allow_gaps=allow_gaps)
    _check_digests(document, chain, key, links, report, allow_gaps=allow_gaps)
    return report


def _check_links(document: dict, chain: str, report: Report, *, allow_gaps: bool) -> dict:
    """Problems with the records and links; returns {sequence: hash} of the links present."""
    records, entries = document["Records"], document["Chain"]
    report.events = len(records)
    if len(records) != len(entries):
        report.problems.append(
            f"{len(records)} records but {len(entries)} chain entries: an event was removed "
            "or added without its link."
        )
        return {}
    walk = []
    for position, (record, entry) in enumerate(zip(records, entries, strict=True), start=1):
        if not isinstance(record, dict) or not isinstance(entry, dict):
            report.problems.append(f"Position {position}: not a JSON object.")
            return {}
        if str(record.get("eventID")) != str(entry.get("eventID")):
            report.problems.append(
                f"Position {position}: record {record.get('eventID')} sits where the chain has "
                f"event {entry.get('eventID')} (link {entry.get('sequence')}): events were "
                "re-ordered or replaced."
            )
            return {}
        if not isinstance(entry.get("sequence"), int):
            report.problems.append(f"Position {position}: the chain entry has no sequence.")
            return {}
        walk.append((entry["sequence"], entry.get("prevHash"), entry.get("hash"), record))
    if len(walk) >= 2 and walk[0][0] > walk[-1][0]:
        walk.reverse()  # newest-first export
    links: dict[int, str] = {}
    previous = None
    for sequence, prev_hash, stored_hash, record in walk:
        event_id = record.get("eventID")
        where = f"Link {sequence} (event {event_id})"
        if previous is not None:
            prev_sequence, prev_stored = previous
            if sequence <= prev_sequence:
                report.problems.append(
                    f"{where} comes after link {prev_sequence}: events were re-ordered or "
                    "duplicated."
                )
                return links
            if sequence != prev_sequence + 1 and not allow_gaps:
                missing = sequence - prev_sequence - 1
                report.problems.append(
                    f"{missing} event(s) missing between link {prev_sequence} and link {sequence}."
                )
            elif sequence == prev_sequence + 1 and prev_hash != prev_stored:
                report.problems.append(f"{where} does not point to link {prev_sequence}.")
        computed = link_hash(chain=chain, sequence=sequence, prev_hash=prev_hash, record=record)
        if computed != stored_hash:
            report.problems.append(f"{where}: the record was changed after it was written.")
        links[sequence] = stored_hash
        previous = (sequence, stored_hash)
    return links


def _check_digests(document, chain, key, links: dict, report: Report, *, allow_gaps: bool):
    digests = document.get("Digests") or []
    report.digests = len(digests)
    if not links:
        return
    first, last = min(links), max(links)
    if not digests:
        report.problems.append(
            "No signed digest covers these events, so nothing vouches for them (digests are "
            "signed hourly: export again later, or include an older event)."
        )
        return
    previous = None
    newest_covered = None
    for digest in digests:
        if not isinstance(digest, dict) or not isinstance(digest.get("sequence"), int):
            report.problems.append("A digest is not a JSON object with a sequence.")
            continue
        sequence = digest["sequence"]
        when = f"The digest of link {sequence} (signed {digest.get('signedAt')})"
        if digest.get("chain") != chain:
            report.problems.append(f"{when} is for another chain ({digest.get('chain')}).")
            continue
        if digest.get("keyId") != report.key_id:
            report.problems.append(
                f"{when} was signed by another key (key {digest.get('keyId')}; the public key "
                f"given is {report.key_id})."
            )
            continue
        try:
            key.verify(base64.b64decode(str(digest.get("signature"))), digest_message(digest))
        except (InvalidSignature, ValueError):
            report.problems.append(f"{when} has an invalid signature.")
            continue
        if previous is not None:
            if sequence <= previous["sequence"]:
                report.problems.append(f"{when} is out of order.")
            elif digest.get("previousSignature") != previous.get("signature"):
                report.problems.append(
                    f"{when} does not follow the digest of link {previous['sequence']}: a "
                    "digest between them is missing."
                )
        previous = digest
        if not first <= sequence <= last:
            report.notes.append(f"{when} is outside the exported links {first}–{last}.")
            continue
        if sequence not in links:
            named_by = when[0].lower() + when[1:]
            message = f"Link {sequence} is missing from the export, yet {named_by} names it."
            (report.notes if allow_gaps else report.problems).append(message)
            continue
        if links[sequence] != digest.get("headHash"):
            report.problems.append(
                f"Link {sequence} does not match {when[0].lower()}{when[1:]}: the chain was "
                "rewritten."
            )
            continue
        newest_covered = sequence
    if newest_covered is not None and newest_covered < last:
        report.notes.append(
            f"Links {newest_covered + 1}–{last} are intact but not yet covered by a signed "
            "digest (digests are signed hourly)."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audit.verify",
        description="Check a BYOK Portal audit export (JSON) offline against the portal's "
        "public key.",
    )
    parser.add_argument("export", type=Path, help="the export: .json or .json.gz")
    parser.add_argument(
        "--public-key",
        required=True,
        type=Path,
        help="the portal's public key file (PEM from /audit/public-key.pem, or raw base64)",
    )
    parser.add_argument("--chain", help="the chain name (org:<id>) if the export has no digests")
    parser.add_argument(
        "--allow-gaps", action="store_true", help="the export is filtered: gaps are expected"
    )
    args = parser.parse_args(argv)
    try:
        key = load_public_key(args.public_key.read_text())
        document = load_export(args.export)
        report = verify_export(document, key, chain=args.chain, allow_gaps=args.allow_gaps)
    except (UnusableInput, OSError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print(
            f"OK: {report.events} event(s) intact; {report.digests} digest(s) verified, signed "
            f"by key {report.key_id}."
        )
        return 0
    for problem in report.problems:
        print(f"FAILED: {problem}")
    print(f"FAILED: {len(report.problems)} problem(s) in {args.export}.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
