"""Audit events cannot be changed or deleted through any ORM path: the default manager, the base
manager Django uses internally, a save of an instance carrying an existing primary key, or a
bulk update. (On PostgreSQL a trigger refuses raw SQL too: tests/integration/
test_audit_immutable_pg.py.)"""

import pytest
from django.db import IntegrityError, transaction

from audit.models import AuditEvent, ImmutableEventError
from audit.services import record_event
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def event():
    return record_event(org=OrganizationFactory(), event_name="RevokeKeyAccess")


def unchanged(event) -> bool:
    stored = AuditEvent.objects.get(pk=event.pk)
    return (stored.event_name, stored.record, stored.hash) == (
        event.event_name,
        event.record,
        event.hash,
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda e: AuditEvent.objects.filter(pk=e.pk).update(event_name="Nothing"),
        lambda e: AuditEvent._base_manager.filter(pk=e.pk).update(event_name="Nothing"),
        lambda e: AuditEvent._base_manager.filter(pk=e.pk).delete(),
        lambda e: AuditEvent.objects.filter(pk=e.pk).delete(),
        lambda e: AuditEvent.objects.bulk_update([e], ["event_name"]),
        lambda e: AuditEvent._base_manager.filter(pk=e.pk)._update({"event_name": "Nothing"}),
        lambda e: e.delete(),
        lambda e: e.save(),
    ],
    ids=[
        "update",
        "base-manager-update",
        "base-manager-delete",
        "delete",
        "bulk-update",
        "base-manager-_update",
        "instance-delete",
        "instance-save",
    ],
)
def test_no_orm_path_changes_or_deletes_an_event(event, change):
    event.event_name = "Nothing"
    with pytest.raises(ImmutableEventError):
        change(event)
    event.refresh_from_db()
    assert event.event_name == "RevokeKeyAccess"


def test_a_new_instance_with_an_existing_primary_key_does_not_overwrite_the_event(event):
    forged = AuditEvent.objects.get(pk=event.pk)
    forged._state.adding = True  # what AuditEvent(pk=<existing>, ...) looks like to save()
    forged.event_name = "Nothing"
    forged.record = {"forged": True}
    with pytest.raises(IntegrityError), transaction.atomic():
        forged.save()
    assert unchanged(event)


def test_save_cannot_be_asked_to_update(event):
    forged = AuditEvent.objects.get(pk=event.pk)
    forged._state.adding = True
    for kwargs in ({"force_update": True}, {"update_fields": ["event_name"]}):
        with pytest.raises(ImmutableEventError):
            forged.save(**kwargs)
    assert unchanged(event)
