"""The API's reads and the setup request it creates: what a playbook or compliance job sees."""

import pytest
from django.test import override_settings

from audit import webhooks
from audit.models import AuditEvent, CloudTrailSource, WebhookEndpoint
from audit.services import record_event
from setup.models import SetupRequest
from tests.api.support import bearer, make_token
from tests.factories import ReencryptionRequestFactory, SetupRequestFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(byok_org, byok_admin):
    return make_token(byok_org, byok_admin)


def _get(client, path, token, **extra):
    return client.get(f"/api/v1{path}", **bearer(token), **extra)


def test_connection_shows_state_and_current_keys(client, byok_org, token):
    body = _get(client, f"/orgs/{byok_org.pk}/byok", token).json()
    assert body["state"] == "active"
    assert [k["region"] for k in body["keys"]] == ["us-east-1"]
    assert "external_id" not in body


def test_sites_show_each_app_instance_state(client, byok_org, token):
    [site] = _get(client, f"/orgs/{byok_org.pk}/sites", token).json()
    assert site["name"] == "acme-killswitch"
    assert [(a["app"], a["status"]) for a in site["app_instances"]] == [("jira", "active")]


def test_unchanged_read_answers_304_to_its_etag(client, byok_org, token):
    first = _get(client, f"/orgs/{byok_org.pk}/byok", token)
    etag = first["ETag"]
    again = _get(client, f"/orgs/{byok_org.pk}/byok", token, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again["ETag"] == etag and again.content == b""
    byok_org.byok_connection.state = "degraded"
    byok_org.byok_connection.save()
    changed = _get(client, f"/orgs/{byok_org.pk}/byok", token, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag


def test_setup_and_reencryption_requests_read_by_id(client, byok_org, token):
    setup = SetupRequestFactory(organization=byok_org, site_name="acme-new")
    rekey = ReencryptionRequestFactory(organization=byok_org, connection=byok_org.byok_connection)
    listed = _get(client, f"/orgs/{byok_org.pk}/setup-requests", token).json()
    assert [r["id"] for r in listed] == [setup.pk]
    assert (
        _get(client, f"/orgs/{byok_org.pk}/setup-requests/{setup.pk}", token).json()["site_name"]
        == "acme-new"
    )
    detail = _get(client, f"/orgs/{byok_org.pk}/reencryption-requests/{rekey.pk}", token)
    assert detail.json()["status"] == "submitted"
    missing = _get(client, f"/orgs/{byok_org.pk}/setup-requests/{setup.pk + 1000}", token)
    assert missing.status_code == 404 and missing["Content-Type"] == "application/problem+json"


def test_setup_request_is_submitted_through_the_pages_service(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin, ["setup:write"])
    answer = client.post(
        f"/api/v1/orgs/{byok_org.pk}/setup-requests",
        {
            "aws_account_id": byok_org.byok_connection.aws_account_id,
            "site_name": "acme-api-site",
            "location": "us",
            "apps": ["confluence"],
        },
        content_type="application/json",
        **bearer(token),
    )
    assert answer.status_code == 201, answer.content
    req = SetupRequest.objects.get(pk=answer.json()["id"])
    assert (req.site_name, req.apps, req.requested_by) == (
        "acme-api-site",
        ["confluence"],
        byok_admin,
    )
    assert AuditEvent.objects.filter(event_name="RequestByokSetup").exists()


def test_setup_request_form_errors_are_400_problems(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin, ["setup:write"])
    answer = client.post(
        f"/api/v1/orgs/{byok_org.pk}/setup-requests",
        {"aws_account_id": "999", "site_name": "x", "location": "us", "apps": ["jira"]},
        content_type="application/json",
        **bearer(token),
    )
    assert answer.status_code == 400
    assert "aws_account_id" in answer.json()["errors"]
    assert not SetupRequest.objects.exists()


def test_a_read_token_cannot_submit_a_setup_request(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin, ["read"])
    answer = client.post(
        f"/api/v1/orgs/{byok_org.pk}/setup-requests", {}, content_type="application/json",
        **bearer(token),
    )  # fmt: skip
    assert answer.status_code == 403


def test_webhook_and_cloudtrail_source_never_return_secrets(client, byok_org, token):
    WebhookEndpoint.objects.create(
        organization=byok_org,
        url="https://siem.acme.example/hook",
        secret_encrypted=webhooks.encrypt_secret("whsec-very-secret"),
    )
    CloudTrailSource.objects.create(organization=byok_org, bucket="acme-trail", region="us-east-1")
    hook = _get(client, f"/orgs/{byok_org.pk}/integrations/webhook", token)
    assert hook.json()["url"] == "https://siem.acme.example/hook"
    assert "secret" not in hook.content.decode().replace("secret_set_at", "")
    trail = _get(client, f"/orgs/{byok_org.pk}/integrations/cloudtrail", token).json()
    assert trail["bucket"] == "acme-trail"


def test_audit_events_need_the_audit_scope(client, byok_org, byok_admin):
    token = make_token(byok_org, byok_admin, ["read"])
    assert _get(client, f"/orgs/{byok_org.pk}/audit/events", token).status_code == 403


def test_audit_events_filter_and_page_with_a_cursor(client, byok_org, token):
    for n in range(5):
        record_event(org=byok_org, event_name="Decrypt", request_parameters={"n": n})
    record_event(org=byok_org, event_name="Encrypt")
    path = f"/orgs/{byok_org.pk}/audit/events"
    first = _get(client, path + "?event_name=Decrypt&limit=3", token).json()
    assert [r["requestParameters"]["n"] for r in first["Records"]] == [4, 3, 2]
    assert first["Records"][0]["eventVersion"]  # the CloudTrail record itself
    second = _get(
        client, path + f"?event_name=Decrypt&limit=3&cursor={first['next_cursor']}", token
    ).json()
    assert [r["requestParameters"]["n"] for r in second["Records"]] == [1, 0]
    assert second["next_cursor"] is None


def test_bad_filters_and_cursors_are_400_problems(client, byok_org, token):
    path = f"/orgs/{byok_org.pk}/audit/events"
    for query in ("?region=mars", "?from=yesterday", "?cursor=forged", "?limit=0"):
        answer = _get(client, path + query, token)
        assert answer.status_code == 400, query
        assert answer["Content-Type"] == "application/problem+json"


def test_one_event_by_its_id(client, byok_org, token):
    event = record_event(org=byok_org, event_name="Decrypt")
    body = _get(client, f"/orgs/{byok_org.pk}/audit/events/{event.event_id}", token).json()
    assert body == event.record


def test_export_streams_and_is_audited(client, byok_org, token):
    record_event(org=byok_org, event_name="Decrypt")
    answer = _get(client, f"/orgs/{byok_org.pk}/audit/export?format=csv", token)
    assert answer.status_code == 200 and answer.streaming
    assert "Decrypt" in b"".join(answer.streaming_content).decode()
    assert AuditEvent.objects.filter(event_name="ExportAuditEvents").exists()
    assert _get(client, f"/orgs/{byok_org.pk}/audit/export?format=xml", token).status_code == 400


def test_unknown_api_url_is_a_404_problem(client, token):
    answer = _get(client, "/no-such-thing", token)
    assert answer.status_code == 404
    assert answer["Content-Type"] == "application/problem+json"


@override_settings(API_RATE_LIMITS={"api_token": "2/min", "api_anon": "100/min"})
def test_each_token_has_its_own_rate_limit(client, byok_org, byok_admin, token):
    other = make_token(byok_org, byok_admin, name="other")
    path = f"/orgs/{byok_org.pk}"
    assert [_get(client, path, token).status_code for _ in range(3)] == [200, 200, 429]
    limited = _get(client, path, token)
    assert limited["Content-Type"] == "application/problem+json" and limited["Retry-After"]
    assert _get(client, path, other).status_code == 200


def test_schema_and_docs_are_served_by_the_portal_under_its_csp(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/orgs/{org_id}/byok/revoke" in schema.json()["paths"]
    docs = client.get("/api/v1/docs/")
    html = docs.content.decode()
    assert docs.status_code == 200
    assert "<style" not in html and "<script>" not in html  # nothing inline
    assert "https://" not in html  # no CDN: the sidecar's assets
    assert "script-src 'self'" in docs["Content-Security-Policy"]
    script = client.get("/api/v1/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


def test_the_schema_is_valid_openapi_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))
    assert "Idempotency-Key" in (tmp_path / "s.yml").read_text()


def test_a_plan_without_byok_gets_409_with_the_reason(client, byok_org, byok_admin):
    byok_org.plan = "standard"
    byok_org.save()
    token = make_token(byok_org, byok_admin, ["setup:write"])
    answer = client.post(
        f"/api/v1/orgs/{byok_org.pk}/setup-requests",
        {
            "aws_account_id": "123456789012",
            "site_name": "acme-x",
            "location": "us",
            "apps": ["jira"],
        },
        content_type="application/json",
        **bearer(token),
    )
    assert answer.status_code == 409
    assert "Enterprise plan" in answer.json()["detail"]
