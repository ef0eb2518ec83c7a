"""Retention: the only deletion of audit events — audited, and the chain stays verifiable."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from freezegun import freeze_time

from audit import digests, retention, verify
from audit.models import AuditEvent, ChainDigest, ChainHead, ImmutableEventError, WebhookDelivery
from audit.services import record_event
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _record_at(org, when, name="Action", n=1):
    with freeze_time(when):
        return [record_event(org=org, event_name=f"{name}{i}") for i in range(n)]


@pytest.fixture
def aged(settings):
    """An org with 3 events from 500 days ago, then 2 from 10 days ago; digests along the way."""
    settings.AUDIT_RETENTION_DAYS = 400
    org = OrganizationFactory()
    old = _record_at(org, NOW - timedelta(days=500), "Old", 3)
    with freeze_time(NOW - timedelta(days=500)):
        digests.sign_chain_digests()
    young = _record_at(org, NOW - timedelta(days=10), "Young", 2)
    with freeze_time(NOW - timedelta(days=10)):
        digests.sign_chain_digests()
    return {"org": org, "old": old, "young": young, "chain": f"org:{org.pk}"}


def test_expired_events_are_purged_and_the_chain_still_verifies(aged):
    with freeze_time(NOW):
        (result,) = retention.purge_expired_events()

    assert (result.deleted, result.first_sequence, result.last_sequence) == (3, 1, 3)
    remaining = list(
        AuditEvent.objects.filter(organization=aged["org"])
        .order_by("sequence")
        .values_list("sequence", "event_name")
    )
    assert remaining == [(4, "Young0"), (5, "Young1"), (6, "AuditRetentionPurge")]
    head = ChainHead.objects.get(chain=aged["chain"])
    assert (head.base_sequence, head.base_prev_hash) == (4, aged["old"][-1].hash)
    assert digests.verify_chain(aged["chain"]) is None
    assert digests.verify_all_chains(aged["org"].pk) == []


def test_the_purge_is_audited_in_the_same_chain(aged):
    with freeze_time(NOW):
        retention.purge_expired_events()

    purge = AuditEvent.objects.get(organization=aged["org"], event_name="AuditRetentionPurge")
    assert purge.record["requestParameters"] == {
        "retentionDays": 400,
        "cutoff": (NOW - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert purge.record["responseElements"] == {
        "eventsDeleted": 3,
        "firstSequenceDeleted": 1,
        "lastSequenceDeleted": 3,
        "newBaseSequence": 4,
        "newBasePrevHash": aged["old"][-1].hash,
    }
    assert purge.record["userIdentity"]["type"] == "AWSService"


def test_running_retention_again_changes_nothing(aged):
    with freeze_time(NOW):
        retention.purge_expired_events()
        count = AuditEvent.objects.count()
        from audit.tasks import purge_expired_audit_events

        assert purge_expired_audit_events.delay().get() == {}
    assert AuditEvent.objects.count() == count


def test_the_verify_command_passes_after_retention(aged, capsys):
    with freeze_time(NOW):
        retention.purge_expired_events()
    call_command("verify_audit_chain", "--org", str(aged["org"].pk))
    assert f"{aged['chain']}: intact (links 4–6)" in capsys.readouterr().out


def test_an_export_after_retention_verifies_offline(aged, tmp_path):
    with freeze_time(NOW):
        retention.purge_expired_events()
        digests.sign_chain_digests()
    document = digests.export_document(org=aged["org"])
    assert [c["sequence"] for c in document["Chain"]] == [4, 5, 6]
    assert [d["sequence"] for d in document["Digests"]] == [5, 6]
    (tmp_path / "export.json").write_text(json.dumps(document))
    (tmp_path / "key.pem").write_text(digests.public_key_pem())
    args = [str(tmp_path / "export.json"), "--public-key", str(tmp_path / "key.pem")]
    assert verify.main(args) == 0


def test_digests_and_deliveries_of_purged_links_go_with_them(aged):
    from audit.models import WebhookEndpoint
    from audit.webhooks import encrypt_secret

    endpoint = WebhookEndpoint.objects.create(
        organization=aged["org"],
        url="https://siem.example.com/in",
        secret_encrypted=encrypt_secret("s" * 20),
    )
    for event in aged["old"] + aged["young"]:
        WebhookDelivery.objects.create(endpoint=endpoint, event=event)
    assert ChainDigest.objects.filter(chain=aged["chain"]).count() == 2

    with freeze_time(NOW):
        retention.purge_expired_events()

    # The purged links' deliveries went with them; the young ones' stay (the purge's own audit
    # event is delivered to the SIEM like any other).
    kept = WebhookDelivery.objects.filter(endpoint=endpoint).exclude(
        event__event_name="AuditRetentionPurge"
    )
    assert sorted(kept.values_list("event_id", flat=True)) == sorted(e.pk for e in aged["young"])
    assert list(ChainDigest.objects.values_list("sequence", flat=True)) == [5]


def test_an_old_event_behind_a_young_one_waits_for_it(settings):
    """Ingested events carry their own time: retention only ever deletes a prefix of a chain."""
    settings.AUDIT_RETENTION_DAYS = 400
    org = OrganizationFactory()
    _record_at(org, NOW - timedelta(days=500), "Old")
    _record_at(org, NOW - timedelta(days=5), "Young")
    _record_at(org, NOW - timedelta(days=450), "ImportedLate")  # an old eventTime, later link

    with freeze_time(NOW):
        (result,) = retention.purge_expired_events()

    assert result.deleted == 1
    names = set(AuditEvent.objects.filter(organization=org).values_list("event_name", flat=True))
    assert names == {"Young0", "ImportedLate0", "AuditRetentionPurge"}
    assert digests.verify_chain(f"org:{org.pk}") is None


def test_large_backlogs_are_purged_in_bounded_batches(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    settings.AUDIT_RETENTION_BATCH = 2
    org = OrganizationFactory()
    _record_at(org, NOW - timedelta(days=60), "Old", 5)

    with freeze_time(NOW):
        results = retention.purge_expired_events()

    # 2 + 2 + 1 old events; then the first purge events themselves are young and stay.
    assert [r.deleted for r in results] == [2, 2, 1]
    assert AuditEvent.objects.filter(event_name="AuditRetentionPurge").count() == 3
    assert digests.verify_chain(f"org:{org.pk}") is None


def test_the_vendor_chain_has_retention_too(settings):
    settings.AUDIT_RETENTION_DAYS = 10
    with freeze_time(NOW - timedelta(days=20)):
        record_event(event_name="ConsoleLogin")
    with freeze_time(NOW):
        (result,) = retention.purge_expired_events()
    assert result.chain == "vendor"
    purge = AuditEvent.objects.get(event_name="AuditRetentionPurge")
    assert purge.organization is None
    assert digests.verify_chain("vendor") is None


def test_deleting_early_links_without_a_purge_event_is_detected(aged):
    """Moving the base by hand (to hide deleted events) is not a retention purge."""
    chain = aged["chain"]
    # Someone with the database owner's rights (on PostgreSQL they get past the trigger too).
    with transaction.atomic(), retention.allow_retention_delete():
        AuditEvent.objects.filter(chain=chain, sequence__lte=2).purge_for_retention()
    ChainHead.objects.filter(chain=chain).update(
        base_sequence=3, base_prev_hash=aged["old"][1].hash
    )
    broken = digests.verify_chain(chain)
    assert broken.sequence == 3 and "no retention purge event" in broken.problem


def test_normal_paths_still_cannot_delete_events(aged):
    with pytest.raises(ImmutableEventError):
        AuditEvent.objects.filter(organization=aged["org"]).delete()
    with pytest.raises(ImmutableEventError):
        aged["old"][0].delete()
