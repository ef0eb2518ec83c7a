"""Hash format 2 (RFC 8785): links re-hash from what the database gives back.

PostgreSQL's jsonb rewrites numbers; the unit lane's SQLite does not. These tests put the
jsonb text into the row by hand, so the regression shows here too (the services lane proves
it on PostgreSQL itself: tests/integration/test_canonical_hashing_pg.py).
"""

import json

import pytest
from django.db import connection

from audit.canonical import canonical_bytes
from audit.chain import json_dumps_bytes, link_hash
from audit.models import AuditEvent
from audit.services import UnstorableRecord, record_event, verify_chain
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

WRITTEN = {"n": 1e16, "z": -0.0, "huge": 1.5e300, "tiny": 1e-7}
# What PostgreSQL's jsonb gives back for WRITTEN (numbers as exact decimals).
AS_JSONB_TEXT = '{"n": 10000000000000000, "z": 0.0, "huge": 15' + "0" * 299 + ', "tiny": 0.0000001}'


def test_jsonb_normalised_numbers_broke_format_1_but_not_format_2():
    stored = json.loads(AS_JSONB_TEXT)
    # Format 1 hashed Python's json.dumps text: the stored record no longer matched.
    assert json_dumps_bytes(WRITTEN) != json_dumps_bytes(stored)
    # Format 2 hashes the values: the same bytes either way.
    assert canonical_bytes(WRITTEN) == canonical_bytes(stored)
    assert canonical_bytes(stored) == (b'{"huge":1.5e+300,"n":10000000000000000,"tiny":1e-7,"z":0}')
    link = {"chain": "org:1", "sequence": 1, "prev_hash": "0" * 64}
    assert link_hash(**link, record=WRITTEN) == link_hash(**link, record=stored)


def _store_as_jsonb_would(event, text: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET record = %s WHERE id = %s", [text, event.pk])


def test_an_event_whose_numbers_the_database_rewrote_still_verifies():
    org = OrganizationFactory()
    event = record_event(org=org, event_name="Decrypt", request_parameters=WRITTEN)
    record_event(org=org, event_name="After")
    assert event.hash_format == 2
    stored = dict(event.record, requestParameters=json.loads(AS_JSONB_TEXT))
    _store_as_jsonb_would(event, json.dumps(stored))

    assert AuditEvent.objects.get(pk=event.pk).record["requestParameters"]["n"] == 10**16
    assert verify_chain(f"org:{org.pk}") is None


def test_a_real_change_to_a_number_is_still_caught():
    org = OrganizationFactory()
    event = record_event(org=org, event_name="Decrypt", request_parameters={"n": 1e16})
    changed = dict(event.record, requestParameters={"n": 10**16 + 2})
    _store_as_jsonb_would(event, json.dumps(changed))

    broken = verify_chain(f"org:{org.pk}")

    assert broken is not None and broken.sequence == 1 and "changed" in broken.problem


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "NaN"),
        (2**1024, "beyond the range of a double"),
        ("\ud800", "lone surrogate"),
        ("a\x00", "NUL"),
    ],
)
def test_a_record_that_cannot_be_stored_faithfully_is_refused_before_the_chain(value, reason):
    org = OrganizationFactory()
    record_event(org=org, event_name="Before")

    with pytest.raises(UnstorableRecord, match=reason) as refused:
        record_event(org=org, event_name="Bad", request_parameters={"v": value})

    assert isinstance(refused.value, ValueError)
    assert AuditEvent.objects.filter(organization=org).count() == 1
    assert record_event(org=org, event_name="After").sequence == 2  # the chain goes on
    assert verify_chain(f"org:{org.pk}") is None
