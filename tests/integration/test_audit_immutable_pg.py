"""On PostgreSQL the database itself keeps audit events immutable: any UPDATE or DELETE of the
event table is refused (raw SQL included, the way a person with a psql prompt would try it),
except retention's purge, which still deletes expired links and leaves a verifiable chain."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from freezegun import freeze_time

from audit import digests, retention
from audit.models import AuditEvent, ChainHead
from audit.services import record_event
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def run(sql: str, params=()) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.fixture
def events():
    org = OrganizationFactory()
    return [record_event(org=org, event_name=f"Action{i}") for i in range(3)]


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET record = '{\"x\": 1}' WHERE id = %s",
        "UPDATE audit_auditevent SET event_name = 'Nothing' WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ],
    ids=["update-record", "update-column", "delete"],
)
def test_raw_sql_cannot_change_or_delete_an_event(events, sql):
    target = events[1]
    with pytest.raises(DatabaseError, match="audit events are immutable"):
        run(sql, [target.pk])
    stored = AuditEvent.objects.get(pk=target.pk)
    assert (stored.event_name, stored.record) == (target.event_name, target.record)
    assert digests.verify_chain(target.chain) is None


def test_the_retention_setting_outside_retention_only_opens_delete_not_update(events):
    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('byok.audit_retention', 'on', true)")
            cursor.execute(
                "UPDATE audit_auditevent SET event_name = 'Nothing' WHERE id = %s",
                [events[0].pk],
            )
    assert AuditEvent.objects.filter(event_name="Nothing").count() == 0


def test_the_door_closes_after_retention_in_the_same_transaction(events):
    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
        with retention.allow_retention_delete():
            pass
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [events[0].pk])
    assert AuditEvent.objects.filter(pk=events[0].pk).exists()


def test_retention_still_purges_expired_events(settings):
    settings.AUDIT_RETENTION_DAYS = 400
    org = OrganizationFactory()
    with freeze_time(NOW - timedelta(days=500)):
        old = [record_event(org=org, event_name=f"Old{i}") for i in range(3)]
    with freeze_time(NOW - timedelta(days=10)):
        record_event(org=org, event_name="Young")
    with freeze_time(NOW):
        (result,) = retention.purge_expired_events()
    assert (result.deleted, result.first_sequence, result.last_sequence) == (3, 1, 3)
    chain = f"org:{org.pk}"
    names = list(
        AuditEvent.objects.filter(chain=chain)
        .order_by("sequence")
        .values_list("event_name", flat=True)
    )
    assert names == ["Young", "AuditRetentionPurge"]
    head = ChainHead.objects.get(chain=chain)
    assert (head.base_sequence, head.base_prev_hash) == (4, old[-1].hash)
    assert digests.verify_chain(chain) is None
    # And the door is shut again afterwards.
    with pytest.raises(DatabaseError, match="immutable"):
        run("DELETE FROM audit_auditevent WHERE chain = %s", [chain])
