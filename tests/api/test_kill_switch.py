"""``POST /api/v1/orgs/{id}/byok/revoke``: the page's kill switch, for a playbook."""

import pytest
from django.core import mail

from api.models import IdempotencyRecord
from audit.models import AuditEvent
from connections.models import ByokConnection
from orgs.models import AppInstance
from tests.api.support import bearer, make_token

pytestmark = pytest.mark.django_db


def _revoke(client, org, token, body=None, **headers):
    return client.post(
        f"/api/v1/orgs/{org.pk}/byok/revoke",
        body if body is not None else {"reason": "SOAR: key misuse"},
        content_type="application/json",
        **bearer(token),
        **headers,
    )


def test_keys_revoke_token_revokes_like_the_page(
    client, byok_org, byok_admin, django_capture_on_commit_callbacks
):
    token = make_token(byok_org, byok_admin, ["keys:revoke"])
    with django_capture_on_commit_callbacks(execute=True):
        answer = _revoke(client, byok_org, token)
    assert answer.status_code == 200, answer.content
    assert answer.json()["state"] == "revoked"
    assert ByokConnection.objects.get(organization=byok_org).state == "revoked"
    assert set(AppInstance.objects.values_list("status", flat=True)) == {"suspended"}
    # The page's audit event, by the token's admin, and the token's own use.
    revoke = AuditEvent.objects.get(event_name="RevokeKeyAccess")
    assert revoke.record["userIdentity"]["userName"] == byok_admin.email
    assert "SOAR: key misuse" in revoke.record["requestParameters"]["reason"]
    use = AuditEvent.objects.get(event_name="UseApiToken")
    assert use.record["userIdentity"]["type"] == "PortalApiToken"
    assert use.record["requestParameters"]["scope"] == "keys:revoke"
    # The page's notices: every org admin hears of it.
    assert [m.to for m in mail.outbox] == [[byok_admin.email]]


def test_read_token_gets_403_and_nothing_changes(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin, ["read", "audit:read", "setup:write"])
    answer = _revoke(client, byok_org, token)
    assert answer.status_code == 403
    assert answer["Content-Type"] == "application/problem+json"
    assert ByokConnection.objects.get(organization=byok_org).state == "active"
    assert not AuditEvent.objects.filter(event_name="RevokeKeyAccess").exists()
    attempt = AuditEvent.objects.get(event_name="UseApiToken", organization=byok_org)
    assert attempt.record["errorCode"] == "AccessDenied"


def test_second_revoke_without_a_key_is_409_with_the_reason(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin, ["keys:revoke"])
    assert _revoke(client, byok_org, token).status_code == 200
    again = _revoke(client, byok_org, token)
    assert again.status_code == 409
    assert "nothing to revoke" in again.json()["detail"]
    refused = AuditEvent.objects.filter(event_name="UseApiToken").order_by("sequence").last()
    assert refused.record["errorCode"] == "NotAllowed"


def test_same_idempotency_key_replays_the_first_answer(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin, ["keys:revoke"])
    first = _revoke(client, byok_org, token, HTTP_IDEMPOTENCY_KEY="drill-1")
    second = _revoke(client, byok_org, token, HTTP_IDEMPOTENCY_KEY="drill-1")
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert AuditEvent.objects.filter(event_name="RevokeKeyAccess").count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_422(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin, ["keys:revoke"])
    _revoke(client, byok_org, token, HTTP_IDEMPOTENCY_KEY="drill-2")
    other = _revoke(
        client, byok_org, token, {"reason": "something else"}, HTTP_IDEMPOTENCY_KEY="drill-2"
    )
    assert other.status_code == 422
    assert other["Content-Type"] == "application/problem+json"


def test_revoke_without_a_reason_is_400_and_changes_nothing(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin, ["keys:revoke"])
    answer = _revoke(client, byok_org, token, {})
    assert answer.status_code == 400
    assert "reason" in answer.json()["errors"]
    assert ByokConnection.objects.get(organization=byok_org).state == "active"


def test_restore_is_not_in_the_api(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin)
    answer = client.post(
        f"/api/v1/orgs/{byok_org.pk}/byok/restore", {}, content_type="application/json",
        **bearer(token),
    )  # fmt: skip
    assert answer.status_code == 404
    assert answer["Content-Type"] == "application/problem+json"
