"""Appending many events at once (``audit.services.append_events``, the re-encryption job's
key-usage events): the same links, records, hourly counts and signals as one ``record_event``
per event."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models.signals import post_save
from freezegun import freeze_time

from audit import digests, verify
from audit.models import AuditEvent, ChainHead, EventCount, EventVolume
from audit.services import UnstorableRecord, append_events, record_event, verify_chain
from tests.audit.test_counts import _kept_counts, _live_counts
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

H = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
KEY = "arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555"


def _parts(i: int, *, when: datetime, error: bool = False) -> dict:
    """The arguments of one key-usage event, fixed (ids and time) so two writes compare."""
    return {
        "event_name": "Decrypt" if i % 2 else "ReEncrypt",
        "kind": AuditEvent.Kind.KEY_USAGE,
        "user_identity": {"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/r"},
        "event_source": "kms.amazonaws.com",
        "aws_region": "us-east-1" if i % 3 else "us-west-2",
        "request_parameters": {"keyId": KEY, "encryptionContext": {"org": "7", "n": str(i)}},
        "resources": [{"type": "AWS::KMS::Key", "ARN": KEY, "accountId": "111122223333"}],
        "error_code": "ThrottlingException" if error else "",
        "error_message": "Rate exceeded" if error else "",
        "read_only": True,
        "request_id": f"req-{i}",
        "recipient_account_id": "111122223333",
        "event_time": when,
        "event_id": str(uuid.UUID(int=i + 1)),
    }


# Events an hour apart at the boundaries, some errors, a portal action among them.
MOMENTS = [
    H - timedelta(microseconds=1),
    H,
    H + timedelta(minutes=59, seconds=59),
    H + timedelta(hours=1),
    H + timedelta(hours=1, minutes=30),
]


def _batch() -> list[dict]:
    events = [_parts(i, when=when, error=i == 2) for i, when in enumerate(MOMENTS)]
    events.append(
        {
            "event_name": "StartReencryption",
            "event_time": H,
            "event_id": str(uuid.UUID(int=99)),
            "request_id": "req-99",
        }
    )
    return events


def _columns(event: AuditEvent) -> tuple:
    return (
        event.kind,
        str(event.event_id),
        event.event_time,
        event.event_source,
        event.event_name,
        event.principal,
        event.key_arn,
        event.aws_region,
        event.error_code,
        event.request_id,
        event.hash_format,
        event.record,
    )


def _volume(org) -> set:
    return set(
        EventVolume.objects.filter(organization=org).values_list(
            "hour",
            "event_name",
            "event_source",
            "principal",
            "key_arn",
            "aws_region",
            "total",
            "errors",
        )
    )


def test_a_bulk_append_writes_what_record_event_writes_one_by_one():
    one_by_one, bulk = OrganizationFactory(), OrganizationFactory()
    record_event(org=one_by_one, event_name="Before")
    record_event(org=bulk, event_name="Before")
    singles = [record_event(org=one_by_one, **parts) for parts in _batch()]
    appended = append_events(org=bulk, events=_batch())

    assert [_columns(e) for e in appended] == [_columns(e) for e in singles]
    stored = AuditEvent.objects.filter(organization=bulk).order_by("sequence")
    assert [_columns(e) for e in stored[1:]] == [_columns(e) for e in singles]
    assert [e.sequence for e in stored] == list(range(1, len(singles) + 2))
    assert all(e.pk is not None for e in appended)


def test_bulk_appended_links_chain_on_from_the_head_and_verify():
    org = OrganizationFactory()
    record_event(org=org, event_name="First")
    append_events(org=org, events=_batch())
    record_event(org=org, event_name="After")
    links = list(AuditEvent.objects.filter(organization=org).order_by("sequence"))
    assert [e.prev_hash for e in links[1:]] == [e.hash for e in links[:-1]]
    head = ChainHead.objects.get(chain=f"org:{org.pk}")
    assert (head.sequence, head.head_hash) == (links[-1].sequence, links[-1].hash)
    assert verify_chain(f"org:{org.pk}") is None


def test_the_stand_alone_verifier_agrees_on_a_bulk_appended_chain(tmp_path, capsys):
    org = OrganizationFactory()
    append_events(org=org, events=_batch())
    digests.sign_chain_digests()
    append_events(org=org, events=[_parts(10 + i, when=H) for i in range(3)])
    digests.sign_chain_digests()
    export = tmp_path / "export.json"
    export.write_text(json.dumps(digests.export_document(org=org)))
    key_file = tmp_path / "portal.pem"
    key_file.write_text(digests.public_key_pem())
    code = verify.main([str(export), "--public-key", str(key_file)])
    out = capsys.readouterr().out
    assert code == verify.EXIT_OK, out
    assert f"OK: {len(_batch()) + 3} event(s) intact" in out


def test_a_bulk_append_counts_hours_exactly_like_one_by_one():
    one_by_one, bulk = OrganizationFactory(), OrganizationFactory()
    for parts in _batch():
        record_event(org=one_by_one, **parts)
    append_events(org=bulk, events=_batch())
    append_events(org=bulk, events=[_parts(20, when=H + timedelta(minutes=5))])  # adds to an hour

    assert _kept_counts(bulk) == _live_counts(bulk)
    record_event(org=one_by_one, **_parts(20, when=H + timedelta(minutes=5)))
    assert _kept_counts(bulk) == _kept_counts(one_by_one)
    assert _volume(bulk) == _volume(one_by_one)


def test_a_record_that_cannot_be_stored_faithfully_writes_nothing():
    org = OrganizationFactory()
    record_event(org=org, event_name="First")
    bad = _parts(1, when=H)
    bad["request_parameters"] = {"amount": float("nan")}  # no JSON text for it
    with pytest.raises(UnstorableRecord):
        append_events(org=org, events=[_parts(0, when=H), bad])
    assert AuditEvent.objects.filter(organization=org).count() == 1
    assert ChainHead.objects.get(chain=f"org:{org.pk}").sequence == 1
    assert sum(c.total for c in EventCount.objects.filter(organization=org)) == 1


def test_each_bulk_appended_event_is_announced_like_a_saved_one():
    org = OrganizationFactory()
    seen = []

    def receiver(sender, instance, created, **kwargs):
        seen.append((instance.pk, instance.sequence, created))

    post_save.connect(receiver, sender=AuditEvent, dispatch_uid="test-bulk")
    try:
        appended = append_events(org=org, events=_batch())
    finally:
        post_save.disconnect(dispatch_uid="test-bulk", sender=AuditEvent)
    assert seen == [(e.pk, e.sequence, True) for e in appended]


@freeze_time("2026-11-30 10:15:00")
def test_vendor_wide_events_chain_without_counts():
    append_events(org=None, events=[{"event_name": "FailedSignIn"}, {"event_name": "FailedSignIn"}])
    assert ChainHead.objects.get(chain="vendor").sequence == 2
    assert verify_chain("vendor") is None
    assert not EventCount.objects.exists()
