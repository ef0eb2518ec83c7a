import json
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection

from audit.chain import chain_name_for, link_hash
from audit.models import AuditEvent, ChainHead, ImmutableEventError
from audit.services import record_event, verify_all_chains, verify_chain
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def _events(org, n=5):
    return [
        record_event(org=org, event_name=f"Action{i}", request_parameters={"i": i})
        for i in range(n)
    ]


def test_each_org_has_its_own_intact_chain():
    a, b = OrganizationFactory(), OrganizationFactory()
    _events(a), _events(b, 3)
    assert verify_all_chains() == []
    seqs = list(
        AuditEvent.objects.filter(organization=b)
        .order_by("sequence")
        .values_list("sequence", flat=True)
    )
    assert seqs == [1, 2, 3]


def test_edited_event_is_detected_at_its_link():
    org = OrganizationFactory()
    events = _events(org)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET record = %s WHERE id = %s",
            ['{"eventName": "Forged"}', events[2].pk],
        )
    broken = verify_chain(f"org:{org.pk}")
    assert broken is not None
    assert broken.sequence == 3
    assert "changed" in broken.problem


def test_deleted_event_is_detected_at_the_gap():
    org = OrganizationFactory()
    events = _events(org)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [events[1].pk])
    broken = verify_chain(f"org:{org.pk}")
    assert broken is not None and broken.sequence == 2


def test_deleting_the_newest_event_is_detected_against_the_chain_head():
    org = OrganizationFactory()
    events = _events(org)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [events[-1].pk])
    broken = verify_chain(f"org:{org.pk}")
    assert broken is not None and broken.sequence == 5


def test_events_cannot_be_changed_or_deleted_through_the_orm():
    event = _events(OrganizationFactory(), 1)[0]
    event.event_name = "Changed"
    with pytest.raises(ImmutableEventError):
        event.save()
    with pytest.raises(ImmutableEventError):
        event.delete()
    with pytest.raises(ImmutableEventError):
        AuditEvent.objects.filter(pk=event.pk).update(event_name="x")
    with pytest.raises(ImmutableEventError):
        AuditEvent.objects.filter(pk=event.pk).delete()


def test_recorded_event_is_a_cloudtrail_record_with_indexed_columns():
    org = OrganizationFactory()
    event = record_event(
        org=org,
        event_name="Decrypt",
        event_source="kms.amazonaws.com",
        aws_region="us-east-1",
        resources=[{"type": "AWS::KMS::Key", "ARN": "arn:aws:kms:us-east-1:123456789012:key/k"}],
        error_code="DisabledException",
        error_message="Key disabled",
    )
    for field in [
        "eventVersion",
        "eventID",
        "eventTime",
        "eventSource",
        "eventName",
        "awsRegion",
        "sourceIPAddress",
        "userAgent",
        "userIdentity",
        "requestParameters",
        "responseElements",
        "errorCode",
        "errorMessage",
        "requestID",
        "readOnly",
        "resources",
        "eventType",
        "eventCategory",
        "recipientAccountId",
    ]:
        assert field in event.record, field
    assert event.key_arn.endswith(":key/k")
    assert event.error_code == "DisabledException"
    assert event.aws_region == "us-east-1"


# --- Hash formats: links written before RFC 8785 stay verifiable ------------------------------


def write_legacy_links(org, records: list[dict]) -> None:
    """Links as the portal wrote them before hash format 2 (json.dumps text, format 1)."""
    chain = chain_name_for(org.pk)
    head, _ = ChainHead.objects.get_or_create(chain=chain)
    prev = head.head_hash
    for sequence, record in enumerate(records, start=head.sequence + 1):
        digest = link_hash(
            chain=chain, sequence=sequence, prev_hash=prev, record=record, hash_format=1
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO audit_auditevent (organization_id, chain, sequence, prev_hash, "
                "hash, kind, event_id, event_time, event_source, event_name, principal, "
                "key_arn, aws_region, error_code, request_id, record, hash_format, "
                "imported_from) VALUES (%s, %s, %s, %s, %s, 'portal', %s, %s, 'x', %s, '', '', "
                "'', '', '', %s, 1, '')",
                [
                    org.pk,
                    chain,
                    sequence,
                    prev,
                    digest,
                    record["eventID"].replace("-", ""),
                    datetime.now(UTC),
                    record["eventName"],
                    json.dumps(record),
                ],
            )
        prev = digest
        ChainHead.objects.filter(chain=chain).update(sequence=sequence, head_hash=digest)


def legacy_record(name: str, **parameters) -> dict:
    return {
        "eventID": str(uuid.uuid4()),
        "eventName": name,
        "eventTime": "2025-04-01T00:00:00Z",
        "requestParameters": parameters,
    }


def test_new_links_are_hashed_in_rfc_8785_format_2():
    event = _events(OrganizationFactory(), 1)[0]
    assert event.hash_format == 2
    assert event.hash == link_hash(
        chain=event.chain,
        sequence=1,
        prev_hash=event.prev_hash,
        record=event.record,
        hash_format=2,
    )


def test_links_written_before_format_2_still_verify_and_the_chain_goes_on():
    org = OrganizationFactory()
    write_legacy_links(org, [legacy_record("Old", n=1.5, who="ü"), legacy_record("Old2", n=2)])
    newer = _events(org, 2)
    assert [e.sequence for e in newer] == [3, 4] and newer[0].hash_format == 2
    assert list(
        AuditEvent.objects.filter(organization=org)
        .order_by("sequence")
        .values_list("hash_format", flat=True)
    ) == [1, 1, 2, 2]
    assert verify_chain(f"org:{org.pk}") is None


def test_an_edited_legacy_link_is_still_caught():
    org = OrganizationFactory()
    write_legacy_links(org, [legacy_record("Old"), legacy_record("Old2")])
    _events(org, 1)
    old = AuditEvent.objects.get(organization=org, sequence=1)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET record = %s WHERE id = %s",
            [json.dumps(dict(old.record, eventName="Forged")), old.pk],
        )
    broken = verify_chain(f"org:{org.pk}")
    assert broken is not None and broken.sequence == 1 and "changed" in broken.problem


def test_a_link_with_an_unknown_hash_format_is_named():
    org = OrganizationFactory()
    events = _events(org, 2)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET hash_format = 9 WHERE id = %s", [events[1].pk])
    broken = verify_chain(f"org:{org.pk}")
    assert broken is not None and broken.sequence == 2 and "unknown hash format" in broken.problem
