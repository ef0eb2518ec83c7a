"""Canonical JSON for hashing audit records: RFC 8785 (JCS), with every number a double.

A link's hash must be reproducible from what the database gives back, in any language. The
record's JSON text is not: PostgreSQL's ``jsonb`` rewrites numbers (``1e16`` comes back as
``10000000000000000``, ``-0.0`` as ``0``), so hashing Python's ``json.dumps`` of the record
made honest rows look tampered with. RFC 8785 serializes the *values*, not the text, and its
numbers are IEEE-754 doubles (as in JavaScript): taking every number as a double before
canonicalizing gives the same bytes for the record as written and as stored.

Some values cannot survive the store or the canonical form at all (NaN, infinities, integers
beyond the double range, lone surrogates, the NUL character that ``jsonb`` refuses, nesting
deeper than any CloudTrail record): :func:`unstorable_reason` names them so callers refuse the
record with a clear reason instead of failing later.
"""

from __future__ import annotations

import math

import rfc8785

#: Deeper than any real CloudTrail record; PostgreSQL and the parsers stay far from their limits.
MAX_DEPTH = 64
_DOUBLE_MAX = 1.7976931348623157e308


class NotCanonicalizable(ValueError):
    """The value cannot be stored and hashed faithfully (see :func:`unstorable_reason`)."""


def as_doubles(value, depth: int = 0):
    """``value`` with every number as a float, as RFC 8785 (and JavaScript) read numbers."""
    if depth > MAX_DEPTH:
        raise NotCanonicalizable(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if abs(value) > _DOUBLE_MAX:
            raise NotCanonicalizable("an integer beyond the range of a double")
        return float(value)
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
    doubles = as_doubles(value)
    _check_strings(doubles)
    try:
        return rfc8785.dumps(doubles)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:
        raise NotCanonicalizable(str(exc)) from exc


def _check_strings(value) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_string(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise NotCanonicalizable("a string holds the NUL character (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotCanonicalizable("a string holds a lone surrogate (not Unicode text)") from exc


def unstorable_reason(value) -> str:
    """Why ``value`` cannot be stored and hashed faithfully, or "" when it can."""
    try:
        canonical_bytes(value)
    except NotCanonicalizable as exc:
        return str(exc)
    return ""
