"""Trust in the portal: hourly signed digests, the public key, `verify_audit_chain`, alerts."""

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse
from freezegun import freeze_time
from hypothesis import given
from hypothesis import strategies as st

from audit import digests
from audit.chain import (
    DIGEST_DOMAIN,
    DIGEST_VERSION,
    GENESIS_HASH,
    chain_name_for,
    digest_message,
    link_hash,
)
from audit.models import AuditEvent, ChainDigest, ChainHead
from audit.services import record_event
from orgs.staff_roles import SUPPORT_STAFF
from tests.factories import OrganizationFactory, org_admin, staff_user

pytestmark = pytest.mark.django_db


def _events(org, n=5):
    return [
        record_event(org=org, event_name=f"Action{i}", request_parameters={"i": i})
        for i in range(n)
    ]


def _raw(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _insert_link(org, *, sequence, prev_hash, record, digest=None):
    """A row written straight into the table, as an attacker with database access would."""
    chain = chain_name_for(org.pk)
    digest = digest or link_hash(chain=chain, sequence=sequence, prev_hash=prev_hash, record=record)
    _raw(
        "INSERT INTO audit_auditevent (organization_id, chain, sequence, prev_hash, hash, kind, "
        "event_id, event_time, event_source, event_name, principal, key_arn, aws_region, "
        "error_code, request_id, record, hash_format, imported_from) VALUES (%s, %s, %s, %s, "
        "%s, 'portal', %s, %s, 'x', %s, '', '', '', '', '', %s, 2, '')",
        [
            org.pk,
            chain,
            sequence,
            prev_hash,
            digest,
            record["eventID"].replace("-", ""),
            datetime.now(UTC),
            record["eventName"],
            json.dumps(record),
        ],
    )
    return digest


def _forged(name="ForgedAction"):
    return {"eventID": str(uuid.uuid4()), "eventName": name, "eventTime": "2026-11-29T00:00:00Z"}


# --- Signing ---------------------------------------------------------------------------------


def test_a_digest_is_signed_only_when_the_head_moved():
    org = OrganizationFactory()
    _events(org, 3)
    first = digests.sign_chain_digests()
    assert [(d.chain, d.sequence) for d in first.signed] == [(f"org:{org.pk}", 3)]

    again = digests.sign_chain_digests()
    assert again.signed == [] and again.unchanged == 1

    _events(org, 2)
    (second,) = digests.sign_chain_digests().signed
    assert second.sequence == 5
    assert second.previous_signature == first.signed[0].signature
    assert ChainDigest.objects.count() == 2


def test_the_digest_is_signed_with_the_published_key(client):
    org = OrganizationFactory()
    events = _events(org, 2)
    (digest,) = digests.sign_chain_digests().signed

    response = client.get("/audit/public-key.pem")  # public: no login

    assert response.status_code == 200
    assert reverse("audit:public-key") == "/audit/public-key.pem"
    assert response["Content-Type"] == "application/x-pem-file"
    key = serialization.load_pem_public_key(response.content)
    document = digests.digest_document(digest)
    key.verify(base64.b64decode(document["signature"]), digest_message(document))
    assert response["X-Audit-Key-Id"] == document["keyId"]
    assert document["headHash"] == events[-1].hash and document["sequence"] == 2


def test_the_offline_verifier_can_be_downloaded_without_login(client):
    response = client.get(reverse("audit:verifier"))
    assert response.status_code == 200
    assert b"def verify_export" in response.content


def test_without_a_signing_key_nothing_is_signed_and_the_key_url_says_so(settings, client):
    settings.AUDIT_SIGNING_KEY = ""
    _events(OrganizationFactory(), 1)
    from audit.tasks import sign_chain_digests

    assert "AUDIT_SIGNING_KEY" in sign_chain_digests.delay().get()["error"]
    assert not ChainDigest.objects.exists()
    assert client.get("/audit/public-key.pem").status_code == 503


def test_a_pem_signing_key_from_settings_is_used(settings):
    key = Ed25519PrivateKey.generate()
    settings.AUDIT_SIGNING_KEY = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    _events(OrganizationFactory(), 1)
    (digest,) = digests.sign_chain_digests().signed
    assert digest.key_id == digests.key_id_of(key.public_key())


def test_a_tampered_chain_is_not_signed_and_staff_are_alerted():
    support = staff_user(SUPPORT_STAFF)
    org = OrganizationFactory()
    events = _events(org)
    _raw("UPDATE audit_auditevent SET record = %s WHERE id = %s", ['{"x": 1}', events[1].pk])

    run = digests.sign_chain_digests()

    chain = chain_name_for(org.pk)
    assert [d for d in run.signed if d.chain == chain] == [] and run.breaks[0].sequence == 2
    assert not ChainDigest.objects.filter(chain=chain).exists()
    (message,) = mail.outbox
    assert message.to == [support.email]
    assert f"org:{org.pk}: link 2" in message.body


def test_each_hour_only_the_new_links_are_rehashed(django_assert_max_num_queries):
    org = OrganizationFactory()
    _events(org, 50)
    digests.sign_chain_digests()
    _events(org, 1)
    # The new link is checked from the last digest, not the whole chain from the genesis.
    head = ChainHead.objects.get(chain=f"org:{org.pk}")
    assert head.sequence == 51
    with django_assert_max_num_queries(10):
        (digest,) = digests.sign_chain_digests().signed
    assert digest.sequence == 51


# --- verify_audit_chain ------------------------------------------------------------------------


def _verify(*args):
    from io import StringIO

    out = StringIO()
    call_command("verify_audit_chain", *args, stdout=out)
    return out.getvalue()


def test_intact_chains_verify_and_the_command_says_so():
    a, b = OrganizationFactory(), OrganizationFactory()
    _events(a, 3), _events(b, 2)
    digests.sign_chain_digests()
    output = _verify()
    assert f"org:{a.pk}: intact (links 1–3)" in output
    assert "2 audit chain(s) verified: all intact." in output
    assert f"org:{b.pk}: intact" in _verify("--org", str(b.pk))


def test_an_edited_row_is_named_and_the_command_fails():
    org = OrganizationFactory()
    events = _events(org)
    _raw(
        "UPDATE audit_auditevent SET record = %s WHERE id = %s",
        ['{"eventName": "Forged"}', events[2].pk],
    )
    with pytest.raises(CommandError) as failure:
        _verify("--org", str(org.pk))
    assert failure.value.returncode == 1
    assert f"org:{org.pk}: link 3 (event {events[2].event_id})" in str(failure.value)
    assert "changed" in str(failure.value)


def test_a_deleted_row_is_detected_at_the_gap():
    org = OrganizationFactory()
    events = _events(org)
    _raw("DELETE FROM audit_auditevent WHERE id = %s", [events[3].pk])
    broken = digests.verify_chain(f"org:{org.pk}")
    assert broken.sequence == 4 and "missing" in broken.problem


def test_an_inserted_row_beyond_the_head_is_detected_at_its_link():
    org = OrganizationFactory()
    events = _events(org)
    _insert_link(org, sequence=6, prev_hash=events[-1].hash, record=_forged())

    broken = digests.verify_chain(f"org:{org.pk}")

    assert broken.sequence == 6 and "inserted" in broken.problem


def test_an_inserted_row_in_the_middle_is_detected_where_it_joins_the_chain():
    org = OrganizationFactory()
    events = _events(org)
    chain = f"org:{org.pk}"
    # Make room at link 3 (highest first, so the unique constraint holds), then insert a
    # well-formed forged link pointing to link 2, and move the head along.
    for event in reversed(events[2:]):
        _raw(
            "UPDATE audit_auditevent SET sequence = sequence + 1 WHERE id = %s",
            [event.pk],
        )
    _insert_link(org, sequence=3, prev_hash=events[1].hash, record=_forged())
    ChainHead.objects.filter(chain=chain).update(sequence=6)

    broken = digests.verify_chain(chain)

    # Link 3 is self-consistent; the original third event (now link 4) still points to link 2.
    assert broken.sequence == 4
    assert broken.event_id == str(events[2].event_id)
    assert "inserted before it" in broken.problem


def test_a_rewritten_chain_is_caught_by_its_signed_digest():
    org = OrganizationFactory()
    events = _events(org)
    digests.sign_chain_digests()  # signs link 5
    chain = f"org:{org.pk}"
    # An attacker edits link 3 and recomputes every hash after it, and the head.
    forged = dict(events[2].record, eventName="Forged")
    prev = events[1].hash
    for index, event in enumerate(events[2:], start=3):
        record = forged if index == 3 else event.record
        digest = link_hash(chain=chain, sequence=index, prev_hash=prev, record=record)
        _raw(
            "UPDATE audit_auditevent SET record = %s, prev_hash = %s, hash = %s WHERE id = %s",
            [json.dumps(record), prev, digest, event.pk],
        )
        prev = digest
    ChainHead.objects.filter(chain=chain).update(head_hash=prev)

    broken = digests.verify_chain(chain)

    assert broken.sequence == 5 and "rewritten" in broken.problem


def test_a_truncated_chain_with_a_rewound_head_is_caught_by_its_digest():
    org = OrganizationFactory()
    events = _events(org)
    digests.sign_chain_digests()
    chain = f"org:{org.pk}"
    _raw("DELETE FROM audit_auditevent WHERE id IN (%s, %s)", [events[3].pk, events[4].pk])
    ChainHead.objects.filter(chain=chain).update(sequence=3, head_hash=events[2].hash)

    broken = digests.verify_chain(chain)

    assert broken.sequence == 4 and "newest events were removed" in broken.problem


def test_a_forged_digest_signature_is_detected():
    org = OrganizationFactory()
    _events(org, 2)
    digests.sign_chain_digests()
    other = base64.b64encode(Ed25519PrivateKey.generate().sign(b"x")).decode()
    ChainDigest.objects.update(signature=other)
    broken = digests.verify_chain(f"org:{org.pk}")
    assert "invalid signature" in broken.problem


def test_the_daily_task_alerts_support_staff_on_a_break(settings):
    settings.ADMINS = [("Ops", "ops@vendor.example")]
    support = staff_user(SUPPORT_STAFF)
    org = OrganizationFactory()
    events = _events(org)
    _raw("DELETE FROM audit_auditevent WHERE id = %s", [events[0].pk])
    from audit.tasks import verify_audit_chains

    result = verify_audit_chains.delay().get()

    assert len(result["breaks"]) == 1
    recipients = sorted(address for message in mail.outbox for address in message.to)
    assert recipients == sorted([support.email, "ops@vendor.example"])
    assert "link 1" in mail.outbox[0].body


def test_the_daily_task_is_quiet_when_everything_verifies():
    staff_user(SUPPORT_STAFF)
    _events(OrganizationFactory())
    from audit.tasks import verify_audit_chains

    assert verify_audit_chains.delay().get() == {"breaks": []}
    assert mail.outbox == []


def test_verify_unknown_org_is_a_clear_error():
    with pytest.raises(CommandError, match="no organization 999999"):
        _verify("--org", "999999")


@freeze_time("2026-11-29 10:00:00")
def test_digests_for_export_cover_exactly_the_exported_range():
    org = OrganizationFactory()
    _events(org, 2)
    digests.sign_chain_digests()
    _events(org, 2)
    digests.sign_chain_digests()
    _events(org, 2)
    digests.sign_chain_digests()
    docs = digests.digests_for_export(org=org, events_first_sequence=3, events_last_sequence=6)
    assert [d["sequence"] for d in docs] == [4, 6]
    assert docs[0]["signedAt"] == "2026-11-29T10:00:00Z"
    assert set(docs[0]) == {
        "digestVersion",
        "chain",
        "sequence",
        "headHash",
        "signedAt",
        "keyId",
        "previousSignature",
        "signature",
    }


def test_the_genesis_is_the_default_base():
    org = OrganizationFactory()
    _events(org, 1)
    head = ChainHead.objects.get(chain=f"org:{org.pk}")
    assert (head.base_sequence, head.base_prev_hash) == (1, GENESIS_HASH)
    assert AuditEvent.objects.get(organization=org).prev_hash == GENESIS_HASH


def test_the_integrations_page_explains_offline_verification(client):
    org = OrganizationFactory()
    _events(org, 2)
    (digest,) = digests.sign_chain_digests().signed
    client.force_login(org_admin(org))
    html = client.get(reverse("integrations:index", args=[org.pk])).content.decode()
    assert reverse("audit:public-key") in html and reverse("audit:verifier") in html
    assert digest.key_id in html
    assert f"Latest digest: link {digest.sequence}," in html


def test_the_command_says_how_far_the_signed_digests_reach():
    org = OrganizationFactory()
    _events(org, 3)
    digests.sign_chain_digests()
    _events(org, 2)
    output = _verify("--org", str(org.pk))
    assert f"org:{org.pk}: intact (links 1–5); signed up to link 3; the newest 2 not yet" in output


# --- Digest messages: RFC 8785, the same bytes as the first digests' json.dumps -------------


@given(
    chain=st.sampled_from(["vendor"]) | st.integers(1, 10**12).map(lambda n: f"org:{n}"),
    sequence=st.integers(1, 2**53),
    head_hash=st.binary(min_size=32, max_size=32).map(bytes.hex),
    signed_at=st.datetimes(timezones=st.just(UTC)).map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
    key_id=st.binary(min_size=8, max_size=8).map(bytes.hex),
    previous=st.none()
    | st.binary(min_size=64, max_size=64).map(lambda b: base64.b64encode(b).decode()),
)
def test_digests_signed_before_rfc_8785_still_verify(
    chain, sequence, head_hash, signed_at, key_id, previous
):
    document = {
        "digestVersion": DIGEST_VERSION,
        "chain": chain,
        "sequence": sequence,
        "headHash": head_hash,
        "signedAt": signed_at,
        "keyId": key_id,
        "previousSignature": previous,
    }
    first_implementation = (
        DIGEST_DOMAIN
        + json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert digest_message(document) == first_implementation


def test_a_links_format_is_rechecked_when_signing():
    org = OrganizationFactory()
    events = [
        record_event(org=org, event_name="Decrypt", request_parameters={"n": 1e16})
        for _ in range(2)
    ]
    # The formats differ for this record (format 1 writes 1e+16): claiming format 1 breaks it.
    _raw("UPDATE audit_auditevent SET hash_format = 1 WHERE id = %s", [events[1].pk])
    run = digests.sign_chain_digests()
    assert run.breaks and run.breaks[0].sequence == 2
