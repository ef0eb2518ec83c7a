"""``/api/v1/orgs/{id}/byok/scoped-revocations``: one site, app or period cut off by a playbook,
through the page's service (``revoke_scope``), while the rest of the organization works."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from connections.models import ByokConnection, ScopedRevocation
from dataplane.access_guard import lookup_access
from orgs.models import AppInstance
from tests.api.support import bearer, make_token
from tests.factories import AppInstanceFactory, OrganizationFactory, SiteFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/orgs/{}/byok/scoped-revocations"


@pytest.fixture
def apps(byok_org):
    jira = AppInstance.objects.get(site__organization=byok_org, app="jira")
    confluence = AppInstanceFactory(
        site=jira.site, app="confluence", encryption="byok", status="active"
    )
    return {"jira": jira, "confluence": confluence}


def _post(client, org, token, body, **headers):
    return client.post(
        URL.format(org.pk), body, content_type="application/json", **bearer(token), **headers
    )


def test_revoking_one_app_refuses_it_and_keeps_the_other(
    client, byok_org, byok_admin, apps, django_capture_on_commit_callbacks
):
    token = make_token(byok_org, byok_admin, ["keys:revoke", "read"])
    body = {"kind": "app", "app_id": apps["jira"].pk, "reason": "SOAR: Jira site compromised"}
    with django_capture_on_commit_callbacks(execute=True):
        answer = _post(client, byok_org, token, body)

    assert answer.status_code == 201, answer.content
    revocation = ScopedRevocation.objects.get()
    assert answer.json()["id"] == revocation.pk
    assert answer.json()["kind"] == "app" and answer.json()["state"] == "revoked"
    # The data plane's access guard: the revoked app refused, the other app and the org not.
    assert lookup_access(apps["jira"].pk).usable is False
    assert lookup_access(apps["confluence"].pk).usable is True
    assert ByokConnection.objects.get(organization=byok_org).state == "active"
    # The page's audit event by the token's admin, the token's own use, the admins' notice.
    event = AuditEvent.objects.get(event_name="RevokeScopedKeyAccess")
    assert event.record["userIdentity"]["userName"] == byok_admin.email
    assert event.record["requestParameters"]["scope"]["appInstanceId"] == apps["jira"].pk
    use = AuditEvent.objects.get(event_name="UseApiToken")
    assert use.record["requestParameters"]["operation"] == "RevokeScopedKeyAccess"
    assert use.record["requestParameters"]["revocationScope"] == {
        "kind": "app",
        "appInstanceId": apps["jira"].pk,
    }
    assert [m.to for m in mail.outbox] == [[byok_admin.email]]
    # Read back: the list, and the app's state on the sites resource.
    listed = client.get(URL.format(byok_org.pk), **bearer(token)).json()
    assert [r["id"] for r in listed] == [revocation.pk]
    sites = client.get(f"/api/v1/orgs/{byok_org.pk}/sites", **bearer(token)).json()
    states = {a["app"]: a["scoped_revocation_id"] for a in sites[0]["app_instances"]}
    assert states == {"jira": revocation.pk, "confluence": None}


def test_a_site_or_app_of_another_org_is_404_and_nothing_changes(
    client, byok_org, byok_admin, apps
):
    other = OrganizationFactory(plan="enterprise")
    foreign_app = AppInstanceFactory(
        site=SiteFactory(organization=other), app="jira", encryption="byok", status="active"
    )
    token = make_token(byok_org, byok_admin, ["keys:revoke"])
    for body in (
        {"kind": "app", "app_id": foreign_app.pk, "reason": "probe"},
        {"kind": "site", "site_id": foreign_app.site_id, "reason": "probe"},
    ):
        answer = _post(client, byok_org, token, body)
        assert answer.status_code == 404, answer.content
        assert answer["Content-Type"] == "application/problem+json"
        assert str(foreign_app.pk) not in answer.json()["detail"]
    assert not ScopedRevocation.objects.exists()
    assert not AuditEvent.objects.filter(organization=other).exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "app", "reason": "x"}, "app_id"),
        ({"kind": "period", "start": "2026-01-01T00:00:00Z", "reason": "x"}, "end"),
        ({"kind": "site", "site_id": 1, "app_id": 2, "reason": "x"}, "app_id"),
        ({"kind": "everything", "reason": "x"}, "kind"),
    ],
)
def test_an_incomplete_scope_is_400_naming_the_field(client, byok_org, byok_admin, body, field):
    token = make_token(byok_org, byok_admin, ["keys:revoke"])
    answer = _post(client, byok_org, token, body)
    assert answer.status_code == 400
    assert field in answer.content.decode()
    assert not ScopedRevocation.objects.exists()


def test_a_period_in_the_future_is_refused_with_the_services_reason(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin, ["keys:revoke"])
    start = timezone.now() + timedelta(days=1)
    body = {
        "kind": "period",
        "start": start.isoformat(),
        "end": (start + timedelta(days=1)).isoformat(),
        "reason": "x",
    }
    answer = _post(client, byok_org, token, body)
    assert answer.status_code == 400
    assert "future" in answer.json()["detail"]
    use = AuditEvent.objects.get(event_name="UseApiToken")
    assert use.record["errorCode"] == "InvalidScope"


def test_read_token_gets_403_audited(client, byok_org, byok_admin, apps):
    token = make_token(byok_org, byok_admin, ["read"])
    answer = _post(
        client, byok_org, token, {"kind": "app", "app_id": apps["jira"].pk, "reason": "x"}
    )
    assert answer.status_code == 403
    assert not ScopedRevocation.objects.exists()
    attempt = AuditEvent.objects.get(event_name="UseApiToken")
    assert attempt.record["errorCode"] == "AccessDenied"
    assert attempt.record["requestParameters"]["operation"] == "RevokeScopedKeyAccess"


def test_idempotency_key_replays_and_a_second_revoke_is_409(client, byok_org, byok_admin, apps):
    token = make_token(byok_org, byok_admin, ["keys:revoke"])
    body = {"kind": "app", "app_id": apps["jira"].pk, "reason": "drill"}
    first = _post(client, byok_org, token, body, HTTP_IDEMPOTENCY_KEY="run-7")
    replay = _post(client, byok_org, token, body, HTTP_IDEMPOTENCY_KEY="run-7")
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json() and replay["Idempotent-Replayed"] == "true"
    assert ScopedRevocation.objects.count() == 1

    again = _post(client, byok_org, token, body)  # no key: a new request, already revoked
    assert again.status_code == 409
    assert "already revoked" in again.json()["detail"]
