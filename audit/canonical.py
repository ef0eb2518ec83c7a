"""Canonical JSON for hashing audit records: RFC 8785 (JCS), with every number a double.

A link's hash must be reproducible from what the database gives back, in any language. The
record's JSON text is not: PostgreSQL's ``jsonb`` rewrites numbers (``1e16`` comes back as
``10000000000000000``, ``-0.0`` as ``0``), so hashing Python's ``json.dumps`` of the record
made honest rows look tampered with. RFC 8785 serializes the *values*, not the text, and its
numbers are IEEE-754 doubles (as in JavaScript): taking every number as a double before
canonicalizing gives the same bytes for the record as written and as stored.

Some values cannot survive the store or the canonical form at all (NaN, infinities, numbers
that round to infinity as a double, lone surrogates, the NUL character that ``jsonb`` refuses,
nesting deeper than any CloudTrail record): :func:`unstorable_reason` names them so callers
refuse the record with a clear reason instead of failing later.
"""

from __future__ import annotations

import json
import math
import re

import rfc8785

#: Deeper than any real CloudTrail record; PostgreSQL and the parsers stay far from their limits.
MAX_DEPTH = 64


class NotCanonicalizable(ValueError):
    """The value cannot be stored and hashed faithfully (see :func:`unstorable_reason`)."""


def as_doubles(value, depth: int = 0):
    """``value`` with every number as a float, as RFC 8785 (and JavaScript) read numbers."""
    if depth > MAX_DEPTH:
        raise NotCanonicalizable(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        # Rounded to the nearest double, as JSON parsers in other languages read it; an integer
        # that rounds to infinity has no double (JavaScript's Number() gives Infinity).
        try:
            return float(value)
        except OverflowError:
            raise NotCanonicalizable("an integer beyond the range of a double") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotCanonicalizable("NaN or an infinite number")
        return value
    if isinstance(value, dict):
        return {_key(k): as_doubles(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_doubles(v, depth + 1) for v in value]
    raise NotCanonicalizable(f"a {type(value).__name__} is not a JSON value")


def _key(key) -> str:
    if not isinstance(key, str):
        raise NotCanonicalizable("an object key is not a string")
    return key


def canonical_bytes(value) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value (numbers taken as doubles)."""
    needs_rfc8785: list[bool] = []
    plain = _checked_plain(value, 0, needs_rfc8785)
    if not needs_rfc8785:
        # The usual record: json.dumps (in C) writes the very same bytes, several times faster.
        return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        return rfc8785.dumps(as_doubles(value))
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:
        raise NotCanonicalizable(str(exc)) from exc


_SAFE_INTEGER = 2.0**53
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")
# json.dumps sorts keys by code point, RFC 8785 by UTF-16 code unit: the orders differ only
# between characters from U+E000 up and characters beyond the BMP.
_KEY_ORDER_MAY_DIFFER = re.compile("[\ue000-\U0010ffff]")


def _checked_plain(value, depth: int, needs_rfc8785: list):
    """Check ``value`` can be stored and canonicalized; return it as json.dumps should see it.

    json.dumps escapes strings as RFC 8785 does (quote, backslash, the short escapes, lower-case
    \\u00xx). Numbers agree for integers below 2**53 (written as ints) and for other doubles
    from 1e-4 up (Python's repr and ECMAScript then write the same shortest digits, plain);
    for anything else ``needs_rfc8785`` gets an entry and the caller uses the rfc8785 package.
    """
    if depth > MAX_DEPTH:
        raise NotCanonicalizable(f"nested deeper than {MAX_DEPTH} levels")
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        _check_string(value)
        return value
    if isinstance(value, int | float):
        number = as_doubles(value, depth)
        if number.is_integer() and abs(number) < _SAFE_INTEGER:
            return int(number)  # also -0.0 -> 0
        if number.is_integer() or abs(number) < 1e-4:
            needs_rfc8785.append(True)
        return number
    if isinstance(value, dict):
        plain = {}
        for key, child in value.items():
            _check_string(_key(key))
            if not key.isascii() and _KEY_ORDER_MAY_DIFFER.search(key):
                needs_rfc8785.append(True)
            plain[key] = _checked_plain(child, depth + 1, needs_rfc8785)
        return plain
    if isinstance(value, list | tuple):
        return [_checked_plain(child, depth + 1, needs_rfc8785) for child in value]
    raise NotCanonicalizable(f"a {type(value).__name__} is not a JSON value")


def _check_string(text: str) -> None:
    if text.isascii() and "\x00" not in text:
        return
    found = _UNSTORABLE_CHARACTER.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        raise NotCanonicalizable("a string holds the NUL character (\\u0000)")
    raise NotCanonicalizable("a string holds a lone surrogate (not Unicode text)")


def unstorable_reason(value) -> str:
    """Why ``value`` cannot be stored and hashed faithfully, or "" when it can."""
    try:
        canonical_bytes(value)
    except NotCanonicalizable as exc:
        return str(exc)
    return ""
