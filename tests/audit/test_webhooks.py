"""SIEM webhook delivery against a real local HTTP server (http.server on 127.0.0.1)."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from audit import webhook_transport, webhooks
from audit.models import AuditEvent, WebhookDelivery, WebhookEndpoint
from audit.services import record_event
from tests.factories import OrganizationFactory, org_admin, org_member

pytestmark = pytest.mark.django_db

SECRET = "correct-horse-siem-secret"
# What a receiver gives a Standard Webhooks library for that passphrase (docs/siem-webhooks.md).
LIBRARY_SECRET = "whsec_Y29ycmVjdC1ob3JzZS1zaWVtLXNlY3JldA=="


class Receiver:
    """A SIEM stand-in: records each request, answers with the queued status codes."""

    def __init__(self, *, tls=None):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.default_status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 — http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.default_status
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:  # an ssl.SSLContext (server side): an HTTPS receiver
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/byok-audit"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def for_event(self, event: AuditEvent) -> list[dict]:
        def event_id(request):
            return json.loads(request["body"])["Records"][0]["eventID"]

        return [r for r in self.requests if event_id(r) == str(event.event_id)]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK = True
    settings.AUDIT_WEBHOOK_MAX_ATTEMPTS = 4
    settings.AUDIT_WEBHOOK_BACKOFF_BASE_S = 30.0
    settings.AUDIT_WEBHOOK_TIMEOUT_S = 5.0
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def hooked(receiver, django_capture_on_commit_callbacks):
    """An org whose webhook points at the receiver; events are delivered as they commit."""
    org = OrganizationFactory()
    admin = org_admin(org)
    webhooks.configure_webhook(org=org, actor=admin, url=receiver.url, secret=SECRET)

    def record(name="RevokeKeyAccess", **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return record_event(org=org, actor=admin, event_name=name, **kwargs)

    return {"org": org, "admin": admin, "record": record}


def test_each_event_is_posted_as_cloudtrail_json_with_a_verifiable_signature(hooked, receiver):
    event = hooked["record"](request_parameters={"reason": "test"})

    (request,) = receiver.for_event(event)
    headers, body = request["headers"], request["body"]
    assert json.loads(body)["Records"] == [event.record]
    assert headers["Content-Type"] == "application/json"
    assert Webhook(LIBRARY_SECRET).verify(body, headers)["Records"] == [event.record]
    delivery = WebhookDelivery.objects.get(event=event)
    assert headers["webhook-id"] == f"msg_{delivery.pk}"
    assert delivery.status == "delivered" and delivery.attempts == 1
    assert delivery.last_status_code == 200


def test_a_signature_made_with_another_secret_does_not_verify(hooked, receiver):
    event = hooked["record"]()
    (request,) = receiver.for_event(event)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"another-secret-entirely").verify(request["body"], request["headers"])


def test_the_payload_says_what_the_portal_recorded(hooked, receiver):
    event = hooked["record"]()

    (request,) = receiver.for_event(event)
    assert json.loads(request["body"])["Provenance"] == [
        {"eventID": str(event.event_id), "origin": "portal", "recordedByVendor": True}
    ]


def test_an_imported_record_posing_as_the_portal_is_delivered_as_imported(hooked, receiver):
    # A customer's trail may hold anything, even the portal's own event source and a vendor
    # identity: the record is delivered as written, and its provenance says where it came from.
    forged = {
        "eventVersion": "1.08",
        "eventTime": "2026-05-01T10:00:00Z",
        "eventSource": "byok.portal.vendor.example",
        "eventName": "RestoreKeyAccess",
        "userIdentity": {"type": "IAMUser", "userName": "rep@vendor.example"},
        "eventID": "5f0b7f5e-3f7a-4c1e-9a57-5b8f9b0b1c2d",
        "requestID": "r-1",
    }
    event = hooked["record"](
        "RestoreKeyAccess",
        kind=AuditEvent.Kind.INGESTED,
        record=forged,
        imported_from="s3://acme-trail/AWSLogs/1.json.gz",
    )

    (request,) = receiver.for_event(event)
    payload = json.loads(request["body"])
    assert payload["Records"] == [forged]
    assert payload["Provenance"] == [
        {
            "eventID": forged["eventID"],
            "origin": "customer-cloudtrail",
            "recordedByVendor": False,
            "importedFrom": "s3://acme-trail/AWSLogs/1.json.gz",
        }
    ]


def test_a_key_usage_event_is_delivered_as_the_vendors_call(hooked, receiver):
    event = hooked["record"]("Decrypt", kind=AuditEvent.Kind.KEY_USAGE)

    (request,) = receiver.for_event(event)
    (provenance,) = json.loads(request["body"])["Provenance"]
    assert provenance["origin"] == "vendor-key-usage" and provenance["recordedByVendor"]


def test_failed_attempts_are_retried_with_exponential_backoff(hooked, receiver):
    receiver.statuses = [500, 503, 200]

    event = hooked["record"]()

    assert len(receiver.for_event(event)) == 3
    delivery = WebhookDelivery.objects.get(event=event)
    assert delivery.status == "delivered" and delivery.attempts == 3
    assert [h["statusCode"] for h in delivery.history] == [500, 503, 200]
    assert [h["retryInS"] for h in delivery.history] == [30.0, 60.0, None]
    # Every attempt is signed afresh, with the same message id (receivers dedupe on it).
    attempts = receiver.for_event(event)
    assert {r["headers"]["webhook-id"] for r in attempts} == {f"msg_{delivery.pk}"}
    for request in attempts:
        Webhook(LIBRARY_SECRET).verify(request["body"], request["headers"])


def test_after_the_last_retry_the_delivery_is_failed_and_shown(hooked, receiver, client):
    receiver.default_status = 500

    event = hooked["record"]()

    assert len(receiver.for_event(event)) == 4  # AUDIT_WEBHOOK_MAX_ATTEMPTS
    delivery = WebhookDelivery.objects.get(event=event)
    assert delivery.status == "failed" and delivery.attempts == 4
    assert delivery.last_status_code == 500 and "HTTP 500" in delivery.last_error
    client.force_login(hooked["admin"])
    html = client.get(reverse("integrations:index", args=[hooked["org"].pk])).content.decode()
    assert 'class="audit-error-row" data-status="failed"' in html
    assert reverse("integrations:delivery-retry", args=[hooked["org"].pk, delivery.pk]) in html


def test_a_worker_schedules_each_retry_with_the_backoff_countdown(hooked, receiver, monkeypatch):
    from celery.exceptions import Retry

    from audit.tasks import deliver_webhook

    receiver.default_status = 502
    event = record_event(org=hooked["org"], event_name="Queued")  # not committed: not sent
    delivery = WebhookDelivery.objects.get(event=event)
    countdowns = []

    def retry(*, countdown, **kwargs):
        countdowns.append(countdown)
        return Retry(when=countdown)

    monkeypatch.setattr(deliver_webhook, "retry", retry)
    for _ in range(2):
        with pytest.raises(Retry):
            deliver_webhook.run(delivery.pk)  # as a worker runs it: not eager
    assert countdowns == [30.0, 60.0]
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.attempts == 2
    assert delivery.next_attempt_at is not None


def test_a_failed_delivery_can_be_retried_by_the_admin(
    hooked, receiver, client, django_capture_on_commit_callbacks
):
    receiver.default_status = 500
    event = hooked["record"]()
    delivery = WebhookDelivery.objects.get(event=event)
    receiver.default_status = 200
    client.force_login(hooked["admin"])

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("integrations:delivery-retry", args=[hooked["org"].pk, delivery.pk]))

    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    assert AuditEvent.objects.filter(event_name="RetryWebhookDelivery").exists()


def test_connection_refused_and_redirects_are_failed_attempts(hooked, receiver, settings):
    settings.AUDIT_WEBHOOK_MAX_ATTEMPTS = 1
    receiver.statuses = [302]
    redirected = hooked["record"]()
    assert WebhookDelivery.objects.get(event=redirected).last_status_code == 302
    assert len(receiver.requests) >= 1

    receiver.stop()
    refused = hooked["record"]()
    delivery = WebhookDelivery.objects.get(event=refused)
    assert delivery.status == "failed" and delivery.last_status_code is None
    assert "Connection refused" in delivery.last_error or "URLError" in delivery.last_error
    receiver.server = _Stopped()


class _Stopped:
    def shutdown(self):
        pass

    def server_close(self):
        pass


def test_an_address_that_resolves_to_a_private_network_is_refused(
    hooked, receiver, settings, monkeypatch
):
    endpoint = WebhookEndpoint.objects.get(organization=hooked["org"])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url="https://siem.example.test/in")
    monkeypatch.setattr(webhook_transport, "resolve_addresses", lambda host, port: ["10.1.2.3"])

    event = hooked["record"]()

    delivery = WebhookDelivery.objects.get(event=event)
    assert delivery.status == "failed" and delivery.attempts == 1  # permanent: no retries
    assert "not a public address" in delivery.last_error


@pytest.mark.parametrize(
    ("url", "loopback_allowed", "problem"),
    [
        ("http://siem.example.com/in", True, "https"),
        ("ftp://siem.example.com/in", True, "https"),
        ("http://127.0.0.1:8080/in", False, "reachable on the internet"),
        ("https://localhost/in", False, "reachable on the internet"),
        ("https://10.0.0.8/in", True, "reachable on the internet"),
        ("https://169.254.169.254/latest", True, "reachable on the internet"),
        ("https://user:pw@siem.example.com/in", True, "credentials"),
    ],
)
def test_webhook_urls_must_be_https_and_public(settings, url, loopback_allowed, problem):
    settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK = loopback_allowed
    with pytest.raises(webhooks.WebhookRefused, match=problem):
        webhooks.validate_webhook_url(url)


def test_the_secret_is_stored_encrypted_and_never_shown_again(
    receiver, client, django_capture_on_commit_callbacks
):
    org = OrganizationFactory()
    admin = org_admin(org)
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("integrations:webhook", args=[org.pk]),
            {"url": receiver.url, "secret": SECRET, "enabled": "on"},
        )
    assert response.status_code == 302

    endpoint = WebhookEndpoint.objects.get(organization=org)
    assert SECRET not in endpoint.secret_encrypted
    assert webhooks.decrypt_secret(endpoint.secret_encrypted) == SECRET.encode()
    html = client.get(reverse("integrations:index", args=[org.pk])).content.decode()
    assert SECRET not in html
    assert SECRET not in json.dumps(list(AuditEvent.objects.values_list("record", flat=True)))
    # Saving again without a secret keeps it.
    client.post(
        reverse("integrations:webhook", args=[org.pk]),
        {"url": receiver.url + "/v2", "secret": "", "enabled": "on"},
    )
    endpoint.refresh_from_db()
    assert endpoint.url.endswith("/v2")
    assert webhooks.decrypt_secret(endpoint.secret_encrypted) == SECRET.encode()


def test_a_new_webhook_needs_a_secret(receiver, client):
    org = OrganizationFactory()
    client.force_login(org_admin(org))
    response = client.post(
        reverse("integrations:webhook", args=[org.pk]), {"url": receiver.url, "secret": ""}
    )
    assert response.status_code == 400
    assert "Enter a shared secret" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_secrets_survive_a_secret_key_rotation_with_fallbacks(settings):
    token = webhooks.encrypt_secret(SECRET)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key-" + "x" * 40
    assert webhooks.decrypt_secret(token) == SECRET.encode()


def test_send_test_event_button_delivers_an_audited_test_event(
    hooked, receiver, client, django_capture_on_commit_callbacks
):
    client.force_login(hooked["admin"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("integrations:webhook-test", args=[hooked["org"].pk]))
    assert response.status_code == 302
    event = AuditEvent.objects.get(organization=hooked["org"], event_name="SendWebhookTestEvent")
    assert len(receiver.for_event(event)) == 1
    assert WebhookDelivery.objects.get(event=event).status == "delivered"


def test_only_the_orgs_own_events_are_delivered(
    hooked, receiver, django_capture_on_commit_callbacks
):
    other = OrganizationFactory()
    with django_capture_on_commit_callbacks(execute=True):
        foreign = record_event(org=other, event_name="RevokeKeyAccess")
        vendor = record_event(event_name="ConsoleLogin")
    assert receiver.for_event(foreign) == [] and receiver.for_event(vendor) == []
    assert not WebhookDelivery.objects.filter(event__in=[foreign, vendor]).exists()


def test_the_sweeper_delivers_events_the_hook_missed(hooked, receiver, monkeypatch):
    # A process that has not seen the new webhook yet records events without deliveries.
    monkeypatch.setattr(webhooks, "_orgs_with_webhooks", frozenset)
    missed = [hooked["record"](f"Missed{i}") for i in range(3)]
    assert not WebhookDelivery.objects.filter(event__in=missed).exists()

    with TestCase.captureOnCommitCallbacks(execute=True):
        result = webhooks.sweep_deliveries()

    assert result["created"] == 3
    for event in missed:
        assert len(receiver.for_event(event)) == 1
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert webhooks.sweep_deliveries()["created"] == 0  # the cursor moved on


def test_the_sweeper_resends_deliveries_whose_task_was_lost(hooked, receiver):
    # Committed with its event, but the process died before the task reached the broker.
    event = record_event(org=hooked["org"], event_name="Lost")
    delivery = WebhookDelivery.objects.get(event=event)
    assert receiver.for_event(event) == []

    with TestCase.captureOnCommitCallbacks(execute=True):
        assert webhooks.sweep_deliveries()["resent"] == 0  # too recent to be lost
    later = timezone.now() + webhooks.STALE_AFTER + timedelta(seconds=1)
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert webhooks.sweep_deliveries(now=later)["resent"] >= 1

    delivery.refresh_from_db()
    assert delivery.status == "delivered" and len(receiver.for_event(event)) == 1


def test_recording_an_event_of_an_org_without_webhook_adds_no_commit_callback(
    django_capture_on_commit_callbacks,
):
    org = OrganizationFactory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        record_event(org=org, event_name="Quiet")
    assert callbacks == []


def test_a_paused_webhook_keeps_events_and_delivers_them_when_enabled(
    hooked, receiver, django_capture_on_commit_callbacks
):
    org, admin = hooked["org"], hooked["admin"]
    with django_capture_on_commit_callbacks(execute=True):
        webhooks.configure_webhook(org=org, actor=admin, url=receiver.url, enabled=False)
    while_paused = hooked["record"]("WhilePaused")
    assert receiver.for_event(while_paused) == []
    with django_capture_on_commit_callbacks(execute=True):
        webhooks.configure_webhook(org=org, actor=admin, url=receiver.url, enabled=True)
        webhooks.sweep_deliveries()
    assert len(receiver.for_event(while_paused)) == 1


def test_removing_the_webhook_is_audited_and_drops_its_log(hooked, client):
    client.force_login(hooked["admin"])
    hooked["record"]()
    response = client.post(reverse("integrations:webhook-delete", args=[hooked["org"].pk]))
    assert response.status_code == 302
    assert not WebhookEndpoint.objects.exists() and not WebhookDelivery.objects.exists()
    assert AuditEvent.objects.filter(event_name="DeleteWebhookConfiguration").exists()


def test_attempting_a_delivered_delivery_again_sends_nothing(hooked, receiver):
    event = hooked["record"]()
    delivery = WebhookDelivery.objects.get(event=event)
    from audit.tasks import deliver_webhook

    assert deliver_webhook.delay(delivery.pk).get() == "delivered"
    assert len(receiver.for_event(event)) == 1


def test_members_cannot_touch_the_webhook(hooked, client):
    client.force_login(org_member(hooked["org"]))
    for name in ("integrations:webhook-test", "integrations:webhook-delete"):
        assert client.post(reverse(name, args=[hooked["org"].pk])).status_code == 403
    assert WebhookEndpoint.objects.filter(organization=hooked["org"]).exists()
