"""Scoped revocation reaches every process: one app revoked on its own is refused in a gunicorn
web process and a Celery worker, while the org's other app keeps serving in both; and a
customer-side Deny on one app's encryption context (injected at the botocore layer: moto does
not evaluate key-policy conditions) suspends that app only, through the health monitor."""

import time

import pytest

from connections import aws
from connections import services as revocation
from connections.models import ByokConnection, ScopedRevocation
from orgs.models import AppInstance, User
from tests.customer_aws import deny_encryption_context
from tests.integration import test_kill_switch_processes as org_wide

pytestmark = pytest.mark.django_db(transaction=True)
acme = org_wide.acme
web_process = org_wide.web_process


def _apps():
    return (
        AppInstance.objects.get(site__name="acme-secure", app="jira"),
        AppInstance.objects.get(site__name="acme-secure", app="confluence"),
    )


def test_revoking_one_app_refuses_it_in_the_web_and_the_worker_process_only(
    acme, web_process, celery_worker_process, wait_for
):
    jira, confluence = _apps()
    # Both processes read (and so cache the data keys of) both apps before the revocation.
    for app in (jira, confluence):
        assert org_wide._web_reads(web_process, app.pk)
        assert org_wide._worker_reads(app.pk, wait_for)

    started = time.monotonic()
    revocation.revoke_scope(
        org=acme,
        actor=User.objects.get(email="admin@acme.example"),
        scope=revocation.Scope.app(jira.pk),
        reason="drill",
    )
    wait_for(lambda: not org_wide._web_reads(web_process, jira.pk), timeout=10, interval=0.05)
    web_latency = time.monotonic() - started
    assert not org_wide._worker_reads(jira.pk, wait_for)
    # The other app keeps serving in both processes; the org's connection stays active.
    assert org_wide._web_reads(web_process, confluence.pk)
    assert org_wide._worker_reads(confluence.pk, wait_for)
    assert ByokConnection.objects.get(organization=acme).state == "active"
    print(f"web process refused the revoked app {web_latency:.2f} s after the revoke")


def test_a_customer_side_deny_on_one_apps_context_suspends_that_app_only(
    acme, web_process, monkeypatch, wait_for
):
    jira, confluence = _apps()
    hooks: list = []
    monkeypatch.setattr(aws, "EVENT_HOOKS", hooks)
    refused = deny_encryption_context(hooks, site="acme-secure", app="jira")
    connection = ByokConnection.objects.get(organization=acme)

    revocation.check_connection_health(connection_id=connection.pk)

    assert refused, "the monitor probed jira with its own encryption context"
    scope = ScopedRevocation.objects.get(organization=acme)
    assert (scope.kind, scope.app_instance_id, scope.source) == ("app", jira.pk, "customer-aws")
    assert ByokConnection.objects.get(pk=connection.pk).state == "active"
    wait_for(lambda: not org_wide._web_reads(web_process, jira.pk), timeout=10, interval=0.05)
    assert org_wide._web_reads(web_process, confluence.pk)
