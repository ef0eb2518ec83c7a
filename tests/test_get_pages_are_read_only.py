"""A GET changes nothing: opening every customer page (and every account rep's page) leaves the
audit log, the database and AWS untouched.

The org is the demo's Acme (``seed_demo`` on moto in-process): a real BYOK connection with keys,
encrypted records, a provisioned setup request, an imported CloudTrail source, a re-encryption
request with a passing preflight and a scheduled job, and a webhook with a failed delivery.
Every URL pattern outside ``admin/`` is walked (``tests.isolation_support.all_routes``), its
kwargs filled with those real objects, and opened with GET as Acme's org admin (``staff/``
pages as an account rep). Around each GET: no new audit event, no AWS API call (counted at
botocore's ``_make_api_call``, so every client counts, cached ones included; after-commit work
runs, with eager Celery), and every table's rows are unchanged (all columns of all rows, except
the session table and ``last_login``). A POST-only view answering 405 is skipped.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from io import StringIO
from urllib.parse import urlsplit

import botocore.client
import pytest
from django.core.management import call_command
from django.db import connection as db
from django.test import Client
from django.urls import resolve
from django.utils import timezone

from api.models import SCOPES
from api.services import create_api_token
from audit import webhooks
from audit.models import AuditEvent, WebhookDelivery, WebhookEndpoint
from connections import aws
from connections.services import Scope, revoke_scope
from dataplane import dek_cache
from demo.acme import ACME_AWS_ACCOUNT
from orgs.models import AppInstance, Organization, User
from reencryption import services as reencryption
from reencryption.models import ReencryptionJob
from setup.models import SetupRequest
from tests.isolation_support import all_routes, build_url, kwarg_names
from tests.support import login_staff, login_verified

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

#: Tables whose rows a page view may legitimately touch (the signed-in session itself).
VOLATILE_TABLES = {"django_session"}
VOLATILE_COLUMNS = {("orgs_user", "last_login")}
#: An API token's last use (time and address, at most once a minute): the credential's own
#: bookkeeping, like last_login, not the organization's data.
API_VOLATILE_COLUMNS = {("api_apitoken", "last_used_at"), ("api_apitoken", "last_used_ip")}
#: GETs that write exactly one audit event by design: taking a copy of the audit log is itself
#: audited (the page's export is the same, behind ``?format=``).
AUDITED_GETS = {"api:audit-export": ["ExportAuditEvents"]}


#: /metrics is walked too, with the scraper's token: its database-read gauges write nothing.
METRICS_TOKEN = "read-only-walk-metrics-token"


@pytest.fixture
def acme(mock_aws, settings, django_capture_on_commit_callbacks):
    settings.DEBUG = True
    settings.METRICS_TOKEN = METRICS_TOKEN
    dek_cache.purge_all()
    call_command("seed_demo", stdout=StringIO())
    org = Organization.objects.get(name="Acme Corp")
    admin = User.objects.get(email="admin@acme.example")
    rep = User.objects.get(email="rep@vendor.example")
    # A re-encryption in a maintenance window: preflight passed, approved, the job scheduled.
    req = reencryption.request_reencryption(
        org=org, actor=admin, scheduled_for=timezone.now() + timedelta(days=2)
    )
    reencryption.claim_reencryption_request(request_id=req.pk, rep=rep)
    with django_capture_on_commit_callbacks(execute=True):
        reencryption.start_reencryption_preflight(request_id=req.pk, actor=rep)
    assert req.preflights.get().status == "passed"
    with django_capture_on_commit_callbacks(execute=False):
        reencryption.approve_reencryption_request(request_id=req.pk, rep=rep)
    job = ReencryptionJob.objects.get(request=req)
    # A webhook with a failed delivery (created directly: nothing is sent).
    event = AuditEvent.objects.filter(organization=org).order_by("-pk").first()
    endpoint = WebhookEndpoint.objects.create(
        organization=org,
        url="https://siem.acme.example/hook",
        secret_encrypted=webhooks.encrypt_secret("demo-secret"),
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event=event, status="failed", attempts=5, last_status_code=500
    )
    webhooks.forget_webhook_orgs()
    # One app revoked on its own: its restore page is walked too.
    confluence = AppInstance.objects.get(
        site__organization=org, app="confluence", encryption="byok"
    )
    scoped = revoke_scope(
        org=org, actor=admin, scope=Scope.app(confluence.pk), reason="read-only walk"
    )
    api_token, whole_token = create_api_token(
        org=org,
        actor=admin,
        name="read-only walk",
        scopes=list(SCOPES),
        expires_at=timezone.now() + timedelta(days=1),
    )
    return {
        "site": confluence.site,
        "app": confluence,
        "scoped_revocation": scoped,
        "api_token": api_token,
        "whole_token": whole_token,
        "org": org,
        "admin": admin,
        "rep": rep,
        "setup_request": SetupRequest.objects.get(organization=org),
        "reencryption": req,
        "job": job,
        "event": event,
        "delivery": delivery,
    }


def kwargs_for(route, acme) -> dict[str, str]:
    values = {}
    for name in kwarg_names(route.route):
        if name == "org_id":
            values[name] = str(acme["org"].pk)
        elif name == "request_id":
            is_reencryption = route.key.startswith("reencryption:")
            values[name] = str(acme["reencryption" if is_reencryption else "setup_request"].pk)
        elif name == "event_id":
            values[name] = str(acme["event"].event_id)
        elif name == "delivery_id":
            values[name] = str(acme["delivery"].pk)
        elif name == "token_id":
            values[name] = str(acme["api_token"].pk)
        elif name == "job_id":
            values[name] = str(acme["job"].pk)
        elif name in ("site_id", "app_id", "revocation_id"):
            values[name] = str(
                acme[name.removesuffix("_id").replace("revocation", "scoped_revocation")].pk
            )
        elif name == "region":
            values[name] = "us-east-1"
        elif name == "url":
            values[name] = "no-such-page/"
        else:
            raise AssertionError(f"{route.key}: no value for URL kwarg {name}")
    return values


def database_state() -> dict[str, tuple[int, str]]:
    """Per table: row count and a digest of every column of every row (volatile ones aside)."""
    state = {}
    with db.cursor() as cursor:
        for table in sorted(db.introspection.table_names(cursor)):
            if table in VOLATILE_TABLES:
                continue
            columns = [
                c.name
                for c in db.introspection.get_table_description(cursor, table)
                if (table, c.name) not in VOLATILE_COLUMNS | API_VOLATILE_COLUMNS
            ]
            quoted = ", ".join(db.ops.quote_name(c) for c in columns)
            cursor.execute(f"SELECT {quoted} FROM {db.ops.quote_name(table)}")  # noqa: S608
            rows = sorted(repr(row) for row in cursor.fetchall())
            state[table] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    return state


@pytest.fixture
def aws_calls(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = botocore.client.BaseClient._make_api_call

    def counting(self, operation_name, api_params):
        calls.append(f"{self.meta.service_model.service_name}.{operation_name}")
        return original(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    return calls


def test_every_get_leaves_the_audit_log_the_database_and_aws_unchanged(
    acme, aws_calls, django_capture_on_commit_callbacks
):
    # The net itself: a changed field shows, and so does an AWS call of any client.
    state = database_state()
    Organization.objects.filter(pk=acme["org"].pk).update(name="Acme Corp (changed)")
    assert database_state() != state
    Organization.objects.filter(pk=acme["org"].pk).update(name="Acme Corp")
    assert database_state() == state
    aws.customer_admin_client("kms", "us-east-1", ACME_AWS_ACCOUNT).list_keys()
    assert "kms.ListKeys" in aws_calls

    admin_client = login_verified(Client(raise_request_exception=True), acme["admin"])
    rep_client = login_staff(Client(raise_request_exception=True), acme["rep"])
    failures: list[str] = []
    opened: list[str] = []
    skipped: list[str] = []
    for route in all_routes():
        if route.is_admin:
            continue
        url = build_url(route, kwargs_for(route, acme))
        assert resolve(urlsplit(url).path).func is route.pattern.callback, url
        is_staff_page = route.route.startswith("staff/")
        client = rep_client if is_staff_page else admin_client
        audit_before = AuditEvent.objects.count()
        state_before = database_state()
        aws_calls.clear()
        # The REST API answers its org API token; /metrics its scraper's token.
        is_api = route.route.startswith("api/v1/orgs")
        bearer = acme["whole_token"] if is_api else METRICS_TOKEN
        try:
            with django_capture_on_commit_callbacks(execute=True):
                response = client.get(
                    url, REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=f"Bearer {bearer}"
                )
        except Exception as exc:  # noqa: BLE001 — every crash is reported
            failures.append(f"GET {url} [{route.key}]: raised {exc!r}")
            continue
        where = f"GET {url} [{route.key}] → {response.status_code}"
        if response.status_code == 405:
            skipped.append(route.key)  # POST-only
            continue
        opened.append(route.key)
        if response.status_code >= 500:
            failures.append(f"{where}: server error")
        if is_api and response.status_code != 200 and response.status_code != 404:
            failures.append(f"{where}: the API token was not accepted")
        if AuditEvent.objects.count() != audit_before:
            new = AuditEvent.objects.order_by("-pk")[: AuditEvent.objects.count() - audit_before]
            names = [e.event_name for e in new]
            if names != AUDITED_GETS.get(route.key):
                failures.append(f"{where}: recorded {names}")
        if aws_calls:
            failures.append(f"{where}: called AWS {aws_calls}")
        state_after = database_state()
        changed = sorted(
            f"{t} ({state_before[t][0]}→{state_after.get(t, (0,))[0]} rows)"
            for t in state_before
            if state_after.get(t) != state_before[t]
        )
        if changed and route.key not in AUDITED_GETS:  # its audit event's rows, checked above
            failures.append(f"{where}: wrote {', '.join(changed)}")
        if "_auth_user_id" not in client.session:
            failures.append(f"{where}: signed the user out")
            login_verified(client, acme["rep" if is_staff_page else "admin"])
    print(f"opened {len(opened)} GET pages: {', '.join(sorted(opened))}; skipped {skipped}")
    assert not failures, "\n".join(failures)
    # The walk really opened the pages that matter (a rename would silently skip them).
    for name in (
        "connections:status",
        "audit:list",
        "audit:event",
        "integrations:index",
        "reencryption:detail",
        "reencryption:staff-detail",
        "setup:request",
        "setup:staff-detail",
        "review:queue",
        "metrics",
        "api:byok",
        "api:audit-events",
        "api:audit-event",
        "api:sites",
        "api:setup-request",
        "api:reencryption-request",
        "api:webhook",
        "api:cloudtrail-source",
        "api:tokens",
        "api:docs",
    ):
        assert name in opened, f"{name} was not opened: {sorted(opened)}"
