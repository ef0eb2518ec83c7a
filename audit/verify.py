"""Check a BYOK Portal audit export offline.

Usage: ``python -m audit.verify EXPORT.json --public-key KEY``

Stand-alone on purpose: this file needs only the Python standard library and ``cryptography``
(no Django, no database, no network), so a customer can copy it next to an export and run it.
KEY is the portal's public key as published at ``/audit/public-key.pem`` (PEM), or the base64
of its 32 raw bytes. The format it checks is documented in ``docs/audit-format.md``; an
independent verifier written from that document alone is ``audit/verifier/verify.mjs``.

An export is ``{"Records": [CloudTrail records], "ChainName": "org:<id>", "Chain": [{"eventID",
"sequence", "prevHash", "hash", "hashFormat", "provenance"}], "Digests": [signed digests],
"DigestSchedule": {"intervalSeconds", "nextDigestAt"}}`` (``.json`` or ``.json.gz``;
``ChainName`` may be left out when digests name the chain). The verifier checks:

1. Chain intact: every record hashes to its link's ``hash`` (so no record was edited), every
   link points to the one before it, the records and chain entries are in the same order with
   consecutive sequence numbers (nothing removed, inserted or re-ordered).
2. Signatures valid: every digest is signed by KEY (Ed25519) — a digest signed by another key
   is rejected — and consecutive digests are linked by their signatures.
3. No event missing between two digests: the link each digest names is in the export and
   hashes to the signed value, so every event up to the newest digest is vouched for.

Exit status (the first word of the last line says the same):

- 0 ``OK``: intact, and every event is vouched for by a signed digest.
- 1 ``FAILED``: something was changed, removed, inserted, re-ordered or wrongly signed.
- 2 ``ERROR``: unusable input (unreadable file, not an export, a bad public key).
- 3 ``NOT YET SIGNED``: intact, but the newest events come after the newest signed digest
  (digests are signed hourly; the export says when the next one is due).
- 4 ``UNSIGNED``: intact, but no signed digest covers any of the events yet.

``--allow-gaps`` accepts a *filtered* export (missing sequence numbers are then expected):
each record is still checked against its own link, but completeness cannot be.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import decimal
import gzip
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# --- The portal's hashing and signing formats (docs/audit-format.md) ---------------------------
# Written apart from audit/chain.py and audit/canonical.py on purpose: the tests check that the
# two implementations agree, and a customer needs only this file.

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
HASH_FORMATS = (1, 2)
#: An export nested deeper than this is not one the portal wrote (records stop at 64 levels).
MAX_DOCUMENT_DEPTH = 500
EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE, EXIT_NOT_YET_SIGNED, EXIT_UNSIGNED = 0, 1, 2, 3, 4


class NoBytes(ValueError):
    """The record has no bytes in the link's format: it cannot be what the portal hashed."""


def rfc8785_bytes(value) -> bytes:
    """Format 2: RFC 8785 (JCS) canonical JSON, every number an IEEE-754 double, UTF-8."""
    parts: list[str] = []
    try:
        _jcs(value, parts)
        return "".join(parts).encode("utf-8")
    except (UnicodeEncodeError, RecursionError, OverflowError) as exc:
        raise NoBytes(str(exc)) from exc


def _jcs(value, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_jcs_string(value))
    elif isinstance(value, int | float):
        out.append(_jcs_number(float(value)))
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _jcs(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        # Keys sorted by their UTF-16 code units (RFC 8785 §3.2.3).
        ordered = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        for index, key in enumerate(ordered):
            if index:
                out.append(",")
            out.append(_jcs_string(key) + ":")
            _jcs(value[key], out)
        out.append("}")
    else:
        raise NoBytes(f"a {type(value).__name__} is not a JSON value")


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _jcs_string(text: str) -> str:
    escaped = (_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if c < " " else c) for c in text)
    return '"' + "".join(escaped) + '"'


def _jcs_number(number: float) -> str:
    """ECMAScript's Number.prototype.toString (RFC 8785 §3.2.2.3)."""
    if not math.isfinite(number):
        raise NoBytes("NaN or an infinite number")
    if number == 0:
        return "0"  # also -0
    if number < 0:
        return "-" + _jcs_number(-number)
    mantissa, _, exponent = repr(number).partition("e")  # shortest round-trip digits
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")  # value = 0.digits × 10**point
    if len(digits) <= point <= 21:
        return digits + "0" * (point - len(digits))
    if 0 < point <= 21:
        return digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return "0." + "0" * -point + digits
    exp = point - 1
    head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{head}e{'+' if exp >= 0 else '-'}{abs(exp)}"


def json_dumps_bytes(record) -> bytes:
    """Format 1: Python's json.dumps text (sorted keys, no spaces, no ASCII escaping)."""
    try:
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode()
    except (UnicodeEncodeError, RecursionError, ValueError) as exc:
        raise NoBytes(str(exc)) from exc


def record_bytes(record, *, hash_format: int) -> bytes:
    if hash_format == 2:
        return rfc8785_bytes(record)
    if hash_format == 1:
        return json_dumps_bytes(record)
    raise NoBytes(f"unknown hash format {hash_format!r}")


def link_hash(*, chain: str, sequence: int, prev_hash: str, record, hash_format: int = 2) -> str:
    digest = hashlib.sha256()
    digest.update(f"{chain}\n{sequence}\n{prev_hash}\n".encode())
    digest.update(record_bytes(record, hash_format=hash_format))
    return digest.hexdigest()


def digest_message(digest: dict) -> bytes:
    return DIGEST_DOMAIN + rfc8785_bytes({k: digest.get(k) for k in DIGEST_SIGNED_FIELDS})


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
    #: The sequences of the exported links, and the newest one a verified digest vouches for.
    sequences: list[int] = field(default_factory=list)
    newest_covered: int | None = None
    next_digest_at: str | None = None
    digest_interval_s: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unsigned(self) -> list[int]:
        """The exported links no verified digest vouches for (the newest ones)."""
        floor = self.newest_covered if self.newest_covered is not None else -1
        return [s for s in self.sequences if s > floor]

    @property
    def status(self) -> int:
        if self.problems:
            return EXIT_FAILED
        if not self.sequences or not self.unsigned:
            return EXIT_OK
        return EXIT_UNSIGNED if self.newest_covered is None else EXIT_NOT_YET_SIGNED


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


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _parse_int(text: str) -> int:
    # Python refuses to read integers of more than 4300 digits from text; JSON has no limit.
    return int(text) if len(text) <= 4000 else int(decimal.Decimal(text))


def _depth_exceeds(value, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def load_export(path: Path) -> dict:
    data = path.read_bytes()
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        document = json.loads(
            data.decode("utf-8"), parse_constant=_reject_constant, parse_int=_parse_int
        )
    except (ValueError, EOFError, OSError, RecursionError) as exc:
        raise UnusableInput(f"{path} is not JSON: {exc}") from exc
    if _depth_exceeds(document, MAX_DOCUMENT_DEPTH):
        raise UnusableInput(f"{path} is nested deeper than {MAX_DOCUMENT_DEPTH} levels.")
    if not isinstance(document, dict) or not isinstance(document.get("Records"), list):
        raise UnusableInput(f'{path} is not an audit export: no "Records" list.')
    if not isinstance(document.get("Chain"), list):
        raise UnusableInput(f'{path} has no "Chain": it cannot be verified.')
    if not isinstance(document.get("Digests", []), list):
        raise UnusableInput(f'{path}: "Digests" is not a list.')
    return document


def _chain_name(document: dict, chain_arg: str | None) -> str:
    names = [document.get("ChainName")]
    names += [e.get("chain") for e in document["Chain"] if isinstance(e, dict)]
    names += [d.get("chain") for d in document.get("Digests") or [] if isinstance(d, dict)]
    names = {name for name in names if isinstance(name, str)}
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
    """Every check on one export; ``report.status`` is the verdict (the exit status)."""
    report = Report()
    raw_key = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    report.key_id = public_key_id(raw_key)
    chain = _chain_name(document, chain)
    links = _check_links(document, chain, report, allow_gaps=allow_gaps)
    _check_digests(document, chain, key, links, report, allow_gaps=allow_gaps)
    schedule = document.get("DigestSchedule")
    if isinstance(schedule, dict):
        if isinstance(schedule.get("nextDigestAt"), str):
            report.next_digest_at = schedule["nextDigestAt"]
        if _is_int(schedule.get("intervalSeconds")):
            report.digest_interval_s = schedule["intervalSeconds"]
    return report


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        if not _same_id(record.get("eventID"), entry.get("eventID")):
            report.problems.append(
                f"Position {position}: record {_text(record.get('eventID'))} sits where the "
                f"chain has event {_text(entry.get('eventID'))}: events were re-ordered or "
                "replaced."
            )
            return {}
        if not _is_int(entry.get("sequence")):
            report.problems.append(f"Position {position}: the chain entry has no sequence.")
            return {}
        # Exports made before hash format 2 carry no hashFormat: their links are format 1.
        hash_format = entry.get("hashFormat", 1)
        walk.append((entry["sequence"], entry.get("prevHash"), entry.get("hash"), hash_format))
    if len(walk) >= 2 and walk[0][0] > walk[-1][0]:
        walk.reverse()  # newest-first export
        records = records[::-1]
    links: dict[int, str] = {}
    previous = None
    for (sequence, prev_hash, stored_hash, hash_format), record in zip(walk, records, strict=True):
        where = f"Link {sequence} (event {_text(record.get('eventID'))})"
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
        if not _is_int(hash_format) or hash_format not in HASH_FORMATS:
            report.problems.append(f"{where} has an unknown hash format ({_text(hash_format)}).")
        elif not _rehashes(chain, sequence, prev_hash, record, hash_format, stored_hash):
            report.problems.append(f"{where}: the record was changed after it was written.")
        links[sequence] = stored_hash
        report.sequences.append(sequence)
        previous = (sequence, stored_hash)
    return links


def _rehashes(chain, sequence, prev_hash, record, hash_format, stored_hash) -> bool:
    if not isinstance(prev_hash, str):
        return False
    try:
        computed = link_hash(
            chain=chain,
            sequence=sequence,
            prev_hash=prev_hash,
            record=record,
            hash_format=hash_format,
        )
    except NoBytes:
        return False
    return computed == stored_hash


def _same_id(record_id, entry_id) -> bool:
    return isinstance(record_id, str) and record_id == entry_id


def _text(value) -> str:
    """A value from the export, for a message: JSON, shortened."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_digests(document, chain, key, links: dict, report: Report, *, allow_gaps: bool):
    digests = document.get("Digests") or []
    report.digests = len(digests)
    if not links:
        return
    first, last = min(links), max(links)
    previous = None
    for digest in digests:
        if not isinstance(digest, dict) or not _is_int(digest.get("sequence")):
            report.problems.append("A digest is not a JSON object with a sequence.")
            continue
        sequence = digest["sequence"]
        when = f"The digest of link {sequence} (signed {_text(digest.get('signedAt'))})"
        if digest.get("chain") != chain:
            report.problems.append(f"{when} is for another chain ({_text(digest.get('chain'))}).")
            continue
        if digest.get("keyId") != report.key_id:
            report.problems.append(
                f"{when} was signed by another key (key {_text(digest.get('keyId'))}; the public "
                f"key given is {report.key_id})."
            )
            continue
        if not _signature_valid(key, digest):
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
        report.newest_covered = max(sequence, report.newest_covered or sequence)


def _signature_valid(key: Ed25519PublicKey, digest: dict) -> bool:
    signature = digest.get("signature")
    if not isinstance(signature, str):
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), digest_message(digest))
    except (InvalidSignature, NoBytes, binascii.Error, ValueError):
        return False
    return True


def _every(seconds: int | None) -> str:
    if not seconds or seconds < 0:
        return "periodically"
    for unit, name in ((3600, "hour"), (60, "minute"), (1, "second")):
        if seconds % unit == 0:
            count = seconds // unit
            return f"every {name}" if count == 1 else f"every {count} {name}s"
    return "periodically"


def _next_digest(report: Report) -> str:
    every = _every(report.digest_interval_s)
    if report.next_digest_at:
        return (
            f"Digests are signed {every}; the next one was due at about "
            f"{report.next_digest_at} when this was exported: export again after it."
        )
    return f"Digests are signed {every}: export again after the next one."


_FILTERED_HINT = (
    " In a filtered export a digest vouches only for the link it names: export the whole log "
    "to have every event vouched for."
)


def verdict(report: Report, *, allow_gaps: bool = False) -> list[str]:
    """The lines ``main`` prints; the last one starts with the verdict's word."""
    status = report.status
    if status == EXIT_FAILED:
        lines = [f"FAILED: {problem}" for problem in report.problems]
        return lines + [f"FAILED: {len(report.problems)} problem(s) found."]
    if status == EXIT_OK:
        return [
            f"OK: {report.events} event(s) intact; {report.digests} digest(s) verified, signed "
            f"by key {report.key_id}."
        ]
    unsigned = report.unsigned
    span = f"links {unsigned[0]}–{unsigned[-1]}"
    hint = _FILTERED_HINT if allow_gaps else ""
    if status == EXIT_UNSIGNED:
        return [
            f"UNSIGNED: the chain is intact ({report.events} event(s), {span}), but no signed "
            "digest covers any of them yet, so nothing vouches for them against a rewrite. "
            + _next_digest(report)
            + hint
        ]
    return [
        f"NOT YET SIGNED: the chain is intact ({report.events} event(s)); every event up to link "
        f"{report.newest_covered} is vouched for by digests signed by key {report.key_id}, but "
        f"the newest {len(unsigned)} event(s) ({span}) are not signed yet. " + _next_digest(report)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audit.verify",
        description="Check a BYOK Portal audit export (JSON) offline against the portal's "
        "public key. Exit status: 0 OK, 1 FAILED, 2 unusable input, 3 intact but the newest "
        "events not yet signed, 4 intact but nothing signed yet.",
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
    except (UnusableInput, OSError, UnicodeDecodeError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    for note in report.notes:
        print(f"note: {note}")
    for line in verdict(report, allow_gaps=args.allow_gaps):
        print(line)
    return report.status


if __name__ == "__main__":
    sys.exit(main())
