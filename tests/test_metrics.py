"""``/metrics``: who may scrape it, and that each of the portal's metrics moves when its event
happens (KMS through moto in-process, webhooks to a real local HTTP server).

Counters are process-wide and never reset, so each test reads them before and after its action
and checks the difference.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection as db
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from audit import digests, webhooks
from audit.models import CloudTrailSource, WebhookDelivery, WebhookEndpoint
from audit.services import record_event
from connections import aws
from connections import services as connection_services
from connections.lifecycle import TransitionNotAllowed
from connections.models import ByokConnection, ConnectionState, RegionalKey
from dataplane import dek_cache
from dataplane import records as dataplane
from dataplane.records import AppSuspended
from integrations import ingestion
from orgs.staff_roles import SUPPORT_STAFF
from reencryption.models import ReencryptionJob
from tests.customer_aws import CUSTOMER_ACCOUNT
from tests.factories import (
    AppInstanceFactory,
    OrganizationFactory,
    ReencryptionRequestFactory,
    SiteFactory,
    org_admin,
    staff_user,
)
from tests.support import login_staff

pytestmark = pytest.mark.django_db

TOKEN = "scrape-me-0123456789abcdef"


@pytest.fixture
def metrics_on(settings):
    settings.METRICS_TOKEN = TOKEN


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=True)


class Scrape:
    """One scrape of /metrics, parsed: ``scrape.value(name, **labels)`` (0 when absent)."""

    def __init__(self, client: Client):
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content
        self.content_type = response["Content-Type"]
        self.text = response.content.decode()
        self.samples: dict[tuple[str, tuple], float] = {}
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                self.samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(self, name: str, **labels) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


@pytest.fixture
def scrape(client, metrics_on):
    return lambda: Scrape(client)


# --- Who may scrape ----------------------------------------------------------------------------


def test_metrics_do_not_exist_without_a_configured_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer"],
)
def test_a_scraper_without_the_right_token_is_refused(client, metrics_on, authorization):
    extra = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = client.get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"byok_" not in response.content


def test_the_scraper_with_the_token_gets_prometheus_text(scrape):
    result = scrape()
    assert result.content_type.startswith("text/plain; version=0.0.4")
    # django-prometheus' request metrics and the portal's own, in one answer.
    assert "django_http_requests_total_by_method_total" in result.names()
    assert result.value("byok_metrics_database_up") == 1
    assert "byok_connections" in result.names()


def test_metrics_answer_get_only(client, metrics_on):
    response = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405


def test_a_staff_session_without_two_factor_is_not_sent_to_set_it_up(client, metrics_on):
    support = staff_user(SUPPORT_STAFF)
    client.force_login(support)  # signed in, second factor not passed
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert client.get("/metrics").status_code == 401  # the session is not a credential
    login_staff(client, support)
    assert client.get("/metrics").status_code == 401


def test_a_scraper_on_plain_http_is_not_redirected_to_https(client, metrics_on, settings):
    settings.SECURE_SSL_REDIRECT = True  # as in production behind the TLS proxy
    assert client.get("/accounts/login/").status_code == 301
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200


# --- AWS calls ---------------------------------------------------------------------------------


@pytest.fixture
def byok(customer_aws):
    """An org with an active connection to moto keys, one BYOK app, a fresh process state."""
    dek_cache.purge_all()
    dataplane.forget_health_throttle()
    org = OrganizationFactory()
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=CUSTOMER_ACCOUNT, location="us", state="active"
    )
    arns = customer_aws.set_up(["us-east-1", "us-west-2"], external_id=connection.external_id)
    for region, arn in arns.items():
        RegionalKey.objects.create(
            connection=connection, region=region, key_arn=arn, status="enabled"
        )
    app = AppInstanceFactory(
        site=SiteFactory(organization=org), app="jira", encryption="byok", status="active"
    )
    yield {"org": org, "connection": connection, "arns": arns, "app": app, "customer": customer_aws}
    dek_cache.purge_all()
    dataplane.forget_health_throttle()


def _session(byok) -> aws.CustomerSession:
    connection = byok["connection"]
    return aws.assume_customer_role(
        role_arn=connection.role_arn, external_id=connection.external_id, cached=False
    )


def test_kms_and_sts_calls_are_counted_by_operation_and_outcome(scrape, byok, inject_aws_error):
    before = scrape()
    session = _session(byok)
    session.describe_key("us-east-1", byok["arns"]["us-east-1"])
    inject_aws_error("kms.Decrypt", code="DisabledException", message="The key is disabled.")
    with pytest.raises(aws.KeyDisabled):
        session.decrypt("us-east-1", byok["arns"]["us-east-1"], b"x" * 64, {"org": "1"})
    after = scrape()

    def delta(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("byok_aws_calls_total", service="sts", operation="AssumeRole", outcome="ok") == 1
    assert delta("byok_aws_calls_total", service="kms", operation="DescribeKey", outcome="ok") == 1
    assert (
        delta("byok_aws_calls_total", service="kms", operation="Decrypt", outcome="key-disabled")
        == 1
    )
    assert delta("byok_aws_call_duration_seconds_count", service="kms", operation="Decrypt") == 1
    # Nothing about the key or the org is a label: an ARN never appears in the scrape.
    assert byok["arns"]["us-east-1"] not in after.text


def test_throttled_attempts_that_botocore_retried_are_counted(
    scrape, byok, inject_aws_error, settings
):
    settings.AWS_MAX_ATTEMPTS = 3
    session = _session(byok)
    before = scrape()
    inject_aws_error("kms.DescribeKey", code="ThrottlingException", status=400)
    with pytest.raises(aws.Throttled):
        session.describe_key("us-east-1", byok["arns"]["us-east-1"])
    after = scrape()
    labels = {"service": "kms", "operation": "DescribeKey"}
    assert after.value("byok_aws_calls_total", outcome="throttled", **labels) == (
        before.value("byok_aws_calls_total", outcome="throttled", **labels) + 1
    )
    assert after.value("byok_aws_retried_attempts_total", **labels) == (
        before.value("byok_aws_retried_attempts_total", **labels) + 2
    )


# --- The data-key cache and the kill switch ---------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 5000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(dek_cache.GUARD, "clock", fake)
    monkeypatch.setattr(dek_cache.CACHE, "clock", fake)
    return fake


def test_a_cache_miss_then_hits_are_counted(scrape, byok, clock):
    app_id = byok["app"].pk
    before = scrape()
    _dek, blob = dataplane.encrypt_for(app_instance_id=app_id, record_id=1, plaintext=b"one")
    for _ in range(3):  # served by the cached key (the hot path)
        dataplane.decrypt_for(app_instance_id=app_id, record_id=1, blob=blob)
    after = scrape()
    lookups = "byok_dek_cache_lookups_total"
    assert after.value(lookups, result="miss") - before.value(lookups, result="miss") == 1
    assert after.value(lookups, result="hit") - before.value(lookups, result="hit") == 3


def test_revocation_by_the_admin_is_counted_and_timed(scrape, byok):
    admin = org_admin(byok["org"])
    before = scrape()
    connection_services.revoke_key_access(org=byok["org"], actor=admin, reason="incident")
    with pytest.raises(TransitionNotAllowed):
        connection_services.revoke_key_access(org=byok["org"], actor=admin, reason="again")
    after = scrape()

    def delta(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("byok_revocations_total", trigger="admin", outcome="revoked") == 1
    assert delta("byok_revocations_total", trigger="admin", outcome="refused") == 1
    assert delta("byok_revocation_duration_seconds_count", trigger="admin") == 1


def test_a_process_refusing_a_revoked_org_observes_the_propagation_delay(scrape, byok, clock):
    app_id = byok["app"].pk
    dataplane.encrypt_for(app_instance_id=app_id, record_id=1, plaintext=b"in use")
    # Another process revoked 2 s ago: this one has heard nothing (no purge, no signal).
    ByokConnection.objects.filter(pk=byok["connection"].pk).update(
        state=ConnectionState.REVOKED, state_changed_at=timezone.now() - timedelta(seconds=2)
    )
    before = scrape()
    clock.now += dek_cache.GUARD.ttl_s  # its "usable" answer is due again
    for _ in range(2):  # refused twice, measured once
        with pytest.raises(AppSuspended):
            dataplane.encrypt_for(app_instance_id=app_id, record_id=2, plaintext=b"refused")
    after = scrape()
    name = "byok_revocation_propagation_seconds"
    assert after.value(f"{name}_count") - before.value(f"{name}_count") == 1
    assert after.value(f"{name}_sum") - before.value(f"{name}_sum") >= 2
    assert after.value(f"{name}_bucket", le="1.0") == before.value(f"{name}_bucket", le="1.0")


def test_a_process_that_was_idle_when_the_org_was_revoked_does_not_skew_the_delay(
    scrape, byok, clock
):
    app_id = byok["app"].pk
    dataplane.encrypt_for(app_instance_id=app_id, record_id=1, plaintext=b"long ago")
    clock.now += 3600  # an hour without a use, then the revocation, a minute ago
    ByokConnection.objects.filter(pk=byok["connection"].pk).update(
        state=ConnectionState.REVOKED, state_changed_at=timezone.now() - timedelta(seconds=60)
    )
    before = scrape()
    with pytest.raises(AppSuspended):
        dataplane.encrypt_for(app_instance_id=app_id, record_id=2, plaintext=b"refused")
    after = scrape()
    name = "byok_revocation_propagation_seconds_count"
    assert after.value(name) == before.value(name)


# --- The health monitor -----------------------------------------------------------------------


def test_health_monitor_results_are_counted_and_its_last_run_is_known(scrape, byok):
    before = scrape()
    connection_services.run_health_monitor()
    customer = byok["customer"]
    customer.disable_key("us-west-2", byok["arns"]["us-west-2"])
    connection_services.run_health_monitor()  # revokes
    connection_services.run_health_monitor()  # already revoked: only the customer's side
    after = scrape()

    def delta(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    # Other tests' connections may be monitored too: at least ours.
    assert delta("byok_health_checks_total", outcome="healthy") >= 1
    assert delta("byok_health_checks_total", outcome="revoked") == 1
    assert delta("byok_health_checks_total", outcome="not-usable") >= 1
    assert delta("byok_revocations_total", trigger="monitor", outcome="revoked") == 1
    last_run = after.value("byok_health_monitor_last_run_timestamp_seconds")
    assert last_run >= timezone.now().timestamp() - 60
    assert after.value("byok_connections", state="revoked") >= 1


# --- CloudTrail ingestion -----------------------------------------------------------------------


def test_ingestion_lag_is_the_worst_source_since_its_last_success(scrape):
    now = timezone.now()
    fresh, stale = OrganizationFactory(), OrganizationFactory()
    for org, last_success, error in (
        (fresh, now - timedelta(seconds=30), ""),
        (stale, now - timedelta(hours=2), "AWS did not answer; the next run retries."),
    ):
        CloudTrailSource.objects.create(
            organization=org,
            bucket="trail-bucket",
            region="us-east-1",
            last_success_at=last_success,
            last_error=error,
        )
    result = scrape()
    assert 7200 <= result.value("byok_cloudtrail_ingestion_lag_seconds") < 7200 + 600
    assert result.value("byok_cloudtrail_sources", status="failing") == 1
    assert result.value("byok_cloudtrail_sources", status="ok") == 1


def test_an_import_run_is_counted_by_outcome(scrape, byok):
    source = CloudTrailSource.objects.create(
        organization=byok["org"], bucket="no-such-bucket", region="us-east-1"
    )
    before = scrape()
    run = ingestion.ingest_source(source_id=source.pk)
    assert run.error  # the bucket does not exist
    after = scrape()
    name = "byok_cloudtrail_imports_total"
    assert after.value(name, outcome="error") - before.value(name, outcome="error") == 1


# --- Webhooks -----------------------------------------------------------------------------------


class Receiver:
    """A SIEM stand-in on 127.0.0.1 answering the queued status codes (then 200)."""

    def __init__(self, statuses: list[int]):
        queue = list(statuses)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 — http.server's naming
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(queue.pop(0) if queue else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_webhook_deliveries_and_failures_are_counted(scrape, settings):
    settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK = True
    settings.AUDIT_WEBHOOK_MAX_ATTEMPTS = 2
    receiver = Receiver([500, 500, 500])  # event 1: retry then failed; event 2: retry, delivered
    try:
        org = OrganizationFactory()
        endpoint = WebhookEndpoint.objects.create(
            organization=org, url=receiver.url, secret_encrypted=webhooks.encrypt_secret("s")
        )
        webhooks.forget_webhook_orgs()
        # Each event's delivery row is written with it (sent after the commit: not here).
        deliveries = [
            WebhookDelivery.objects.get_or_create(
                endpoint=endpoint, event=record_event(org=org, event_name=f"Action{i}")
            )[0]
            for i in range(2)
        ]
        before = scrape()
        for delivery in deliveries:
            for _ in range(2):
                webhooks.attempt_delivery(delivery_id=delivery.pk)
        after = scrape()
    finally:
        receiver.close()
        webhooks.forget_webhook_orgs()
    name = "byok_webhook_attempts_total"
    for outcome, expected in (("retry", 2), ("failed", 1), ("delivered", 1)):
        assert after.value(name, outcome=outcome) - before.value(name, outcome=outcome) == expected
    assert after.value("byok_webhook_deliveries", status="failed") >= 1


def test_the_webhook_backlog_shows_its_oldest_pending_delivery(scrape):
    org = OrganizationFactory()
    endpoint = WebhookEndpoint.objects.create(
        organization=org,
        url="https://siem.example/hook",
        secret_encrypted=webhooks.encrypt_secret("s"),
    )
    event = record_event(org=org, event_name="Old")
    delivery, _ = WebhookDelivery.objects.get_or_create(endpoint=endpoint, event=event)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        created_at=timezone.now() - timedelta(minutes=30)
    )
    webhooks.forget_webhook_orgs()
    result = scrape()
    assert result.value("byok_webhook_deliveries", status="pending") >= 1
    assert result.value("byok_webhook_oldest_pending_age_seconds") >= 1800


# --- Re-encryption -------------------------------------------------------------------------------


def test_reencryption_progress_is_read_from_the_job(scrape):
    request = ReencryptionRequestFactory()
    job = ReencryptionJob.objects.create(
        request=request,
        connection=request.connection,
        mode="rotate",
        state=ReencryptionJob.State.RUNNING,
        phase=ReencryptionJob.Phase.ROTATE,
        scheduled_for=timezone.now(),
        batch_size=500,
        total=1000,
        done=250,
        started_at=timezone.now(),
        heartbeat_at=timezone.now() - timedelta(seconds=90),
    )
    result = scrape()
    labels = {"job": str(job.pk), "mode": "rotate", "state": "running", "phase": "rotate"}
    assert result.value("byok_reencryption_job_units_done", **labels) == 250
    assert result.value("byok_reencryption_job_units_total", **labels) == 1000
    assert result.value("byok_reencryption_job_progress_ratio", **labels) == 0.2
    assert result.value("byok_reencryption_job_heartbeat_age_seconds", **labels) >= 90
    assert result.value("byok_reencryption_jobs", state="running") >= 1


# --- Audit chains ----------------------------------------------------------------------------


def test_chain_verifications_are_counted_and_a_break_is_shown(scrape):
    org = OrganizationFactory()
    events = [record_event(org=org, event_name=f"Action{i}") for i in range(3)]
    digests.sign_chain_digests()
    before = scrape()
    assert digests.verify_and_alert() == []
    middle = scrape()
    with db.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET record = %s WHERE id = %s", ['{"x": 1}', events[1].pk]
        )
    breaks = digests.verify_and_alert()
    after = scrape()
    name = "byok_audit_chain_verifications_total"
    assert middle.value(name, kind="full", result="ok") > before.value(
        name, kind="full", result="ok"
    )
    assert middle.value("byok_audit_chains_broken") == 0
    assert middle.value("byok_audit_chains_last_verified_timestamp_seconds") > 0
    assert (
        after.value(name, kind="full", result="broken")
        - middle.value(name, kind="full", result="broken")
        == len(breaks)
        >= 1
    )
    assert after.value("byok_audit_chains_broken") == len(breaks)
    assert middle.value(name, kind="digest", result="ok") >= 1
