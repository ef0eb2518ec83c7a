import pytest
from django.db import connection

from audit.models import AuditEvent, ImmutableEventError
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
