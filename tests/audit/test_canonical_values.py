"""JSON values that break naive hashing, and the canonical form's properties over them.

``json_values`` is shared: the PostgreSQL property test (tests/integration/
test_canonical_hashing_pg.py) and the cross-language verifier test use the same strategy.
"""

import json

from hypothesis import given
from hypothesis import strategies as st

from audit import verify
from audit.canonical import MAX_DEPTH, NotCanonicalizable, canonical_bytes, unstorable_reason

#: Values that PostgreSQL's jsonb writes back differently from Python's json.dumps, or that
#: sit at the edges of a double.
AWKWARD_NUMBERS = [
    1e16,
    -0.0,
    1.5e300,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    1e21,
    1e-7,
    0.1,
    123456789.125,
    2**53 + 1,
    10**20,
    -(2**63),
    2**1000,
]
AWKWARD_TEXT = [
    "\u2028\u2029",
    "\U0001f600",
    "\U0010ffff",
    "\ufb01",  # sorts after U+1F600 in UTF-16, before it by code point
    "\x1f\x7f\x08",
    'quote" back\\slash',
    "ü-é-日本",
]

numbers = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from(AWKWARD_NUMBERS)
)
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
) | st.sampled_from(AWKWARD_TEXT)
leaves = st.none() | st.booleans() | numbers | text


def _nested(depth: int, leaf):
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


#: Nesting up to what a record may hold under ``requestParameters`` (record → dict → here).
deep = st.builds(_nested, st.integers(min_value=1, max_value=MAX_DEPTH - 3), leaves)
json_values = (
    st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4)
        ),
        max_leaves=24,
    )
    | deep
)


def jsonb_like(value):
    """``value`` as PostgreSQL's jsonb gives it back: every number as exact decimal text."""
    text = json.dumps(value, ensure_ascii=False)
    return json.loads(text, parse_float=_decimal_text_number, parse_int=int)


def _decimal_text_number(token: str):
    from decimal import Decimal

    exact = Decimal(token)
    if exact == exact.to_integral_value():
        return int(exact)  # jsonb prints 1e16 as 10000000000000000, -0.0 as 0
    return float(format(exact, "f"))


@given(json_values)
def test_the_standalone_verifier_canonicalizes_like_the_portal(value):
    assert verify.rfc8785_bytes(value) == canonical_bytes(value)


@given(json_values)
def test_the_canonical_form_survives_jsonb(value):
    assert canonical_bytes(jsonb_like(value)) == canonical_bytes(value)


@given(json_values)
def test_the_canonical_form_survives_a_json_round_trip(value):
    encoded = canonical_bytes(value)
    assert canonical_bytes(json.loads(encoded)) == encoded


@given(json_values)
def test_every_generated_value_is_storable(value):
    assert unstorable_reason({"requestParameters": {"v": value}}) == ""


def test_values_that_cannot_survive_the_store_are_named():
    too_deep = _nested(MAX_DEPTH + 1, 1)
    cases = {
        "NaN": float("nan"),
        "infinite": float("inf"),
        "beyond the range of a double": 2**1024,
        "lone surrogate": "\ud800",
        "NUL": "a\x00b",
        "deeper": too_deep,
        "not a JSON value": {1, 2},
    }
    for words, value in cases.items():
        reason = unstorable_reason({"v": value})
        assert words in reason, (words, reason)
        try:
            canonical_bytes({"v": value})
        except NotCanonicalizable:
            pass
        else:  # pragma: no cover - the assertion names the value
            raise AssertionError(f"{words} was canonicalized")


@given(json_values)
def test_the_fast_path_writes_exactly_rfc_8785(value):
    import rfc8785

    from audit.canonical import as_doubles

    assert canonical_bytes(value) == rfc8785.dumps(as_doubles(value))
