"""Lock order on PostgreSQL: the kill switch and the audit log's writers never deadlock.

Every audit event row references its organization, and PostgreSQL checks that reference at
commit with a KEY SHARE lock on the organization's row. A revoke that locked the connection
*with its joined organization row* FOR UPDATE, while a data-plane process held the org's chain
head, deadlocked: the revoke waited for the chain head, the other writer's commit for the org
row. Services lock only their own row (``of=("self",)``), FOR NO KEY UPDATE.
"""

import threading

import pytest
from django.db import connection, connections, transaction

from audit.models import AuditEvent
from audit.services import record_event
from connections import services
from connections.models import ByokConnection
from tests.factories import ByokConnectionFactory, org_admin

pytestmark = pytest.mark.django_db(transaction=True)


def _backends_waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # a transaction sees one snapshot
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_a_revoke_waiting_for_the_chain_head_lets_the_holder_commit(wait_for):
    byok = ByokConnectionFactory(state="active")
    org, admin = byok.organization, org_admin(byok.organization)
    outcome: dict = {}
    record_event(org=org, event_name="CreateKey")  # the org's chain head exists already

    def revoke() -> None:
        try:
            services.revoke_key_access(org=org, actor=admin, reason="lock-order drill")
            outcome["state"] = ByokConnection.objects.get(pk=byok.pk).state
        except Exception as exc:  # noqa: BLE001 — reported by the assertion below
            outcome["error"] = exc
        finally:
            connections.close_all()

    with transaction.atomic():
        # A data-plane writer: it holds the org's chain head until it commits.
        record_event(org=org, event_name="Decrypt", read_only=True)
        worker = threading.Thread(target=revoke)
        worker.start()
        # The revoke has locked the connection and now waits for the chain head.
        wait_for(lambda: _backends_waiting_on_locks() >= 1, timeout=10)
    # This commit needs a KEY SHARE lock on the organization's row: it must not wait for the
    # revoke (which would deadlock: PostgreSQL aborts one of the two).
    worker.join(timeout=30)

    assert "error" not in outcome, outcome.get("error")
    assert outcome["state"] == "revoked"
    names = list(
        AuditEvent.objects.filter(organization=org)
        .order_by("sequence")
        .values_list("event_name", flat=True)
    )
    assert names[:2] == ["CreateKey", "Decrypt"] and "RevokeKeyAccess" in names
