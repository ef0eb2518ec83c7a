"""Revocation reaches every process: a web server process and a Celery worker process."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from api.models import ApiToken
from api.services import revoke_api_token
from audit.models import AuditEvent
from connections import services as revocation
from connections.models import ByokConnection
from connections.tasks import run_health_monitor
from dataplane.tasks import run_read_check_task
from demo import customer_side
from demo.acme import ACME_AWS_ACCOUNT, seed_demo_byok
from demo.seed import seed_demo_world
from orgs.models import AppInstance, User
from tests.api.support import make_token
from tests.integration.data_reader_wsgi import READ_PREFIX

pytestmark = pytest.mark.django_db(transaction=True)
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def web_process(celery_worker_process, wait_for):
    """gunicorn serving the portal against the test database, like production."""
    port = _free_port()
    env = dict(celery_worker_process.env, ALLOWED_HOSTS="127.0.0.1", DEBUG="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "tests.integration.data_reader_wsgi",
         "-b", f"127.0.0.1:{port}", "-w", "1"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, timeout=30, message="gunicorn to answer /healthz")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def acme(moto_reset):
    orgs = seed_demo_world()
    seed_demo_byok()
    return orgs["Acme Corp"]


def _web_reads(url: str, app_id: int) -> bool:
    """A data-plane read of the app's newest record inside the gunicorn process."""
    answer = urllib.request.urlopen(f"{url}{READ_PREFIX}{app_id}", timeout=10).read().decode()
    return answer.startswith("readable")


def _worker_reads(app_id: int, wait_for) -> bool:
    before = AuditEvent.objects.filter(event_name="AppReadCheck").count()
    run_read_check_task.delay(app_id)
    wait_for(
        lambda: AuditEvent.objects.filter(event_name="AppReadCheck").count() > before, timeout=30
    )
    latest = AuditEvent.objects.filter(event_name="AppReadCheck").order_by("-id").first()
    return latest.record["responseElements"]["readable"]


def test_revoke_refuses_reads_in_the_web_and_the_worker_process(
    acme, web_process, celery_worker_process, wait_for
):
    jira = AppInstance.objects.get(site__name="acme-secure", app="jira")

    # Both processes read (and so cache the data key) before the revocation.
    assert _web_reads(web_process, jira.pk)
    assert _worker_reads(jira.pk, wait_for)

    started = time.monotonic()
    revocation.revoke_key_access(
        org=acme, actor=User.objects.get(email="admin@acme.example"), reason="drill"
    )
    wait_for(lambda: not _web_reads(web_process, jira.pk), timeout=10, interval=0.05)
    web_latency = time.monotonic() - started
    assert not _worker_reads(jira.pk, wait_for)
    print(f"web process refused reads {web_latency:.2f} s after the revoke")


def _api_revoke(url: str, org_id: int, token: str) -> int:
    """POST the kill switch to the gunicorn process; the HTTP status."""
    request = urllib.request.Request(
        f"{url}/api/v1/orgs/{org_id}/byok/revoke",
        data=json.dumps({"reason": "drill"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_api_kill_switch_refuses_reads_in_another_process_within_2_s(
    acme, web_process, celery_worker_process, wait_for
):
    """A playbook's keys:revoke token pulls the kill switch; the web process (a second
    process, with the data key cached) refuses reads within 2 s. A read token gets 403; an
    expired or revoked token 401; none of them changes anything."""
    admin = User.objects.get(email="admin@acme.example")
    jira = AppInstance.objects.get(site__name="acme-secure", app="jira")
    read_token = make_token(acme, admin, ["read", "audit:read"], name="read")
    expired_token = make_token(acme, admin, ["keys:revoke"], name="expired")
    ApiToken.objects.filter(name="expired").update(expires_at=timezone.now())
    revoked_token = make_token(acme, admin, ["keys:revoke"], name="revoked")
    revoke_api_token(org=acme, token_id=ApiToken.objects.get(name="revoked").pk, actor=admin)
    kill_token = make_token(acme, admin, ["keys:revoke"], name="playbook")
    assert _web_reads(web_process, jira.pk)  # the gunicorn process caches the data key

    assert _api_revoke(web_process, acme.pk, read_token) == 403
    assert _api_revoke(web_process, acme.pk, expired_token) == 401
    assert _api_revoke(web_process, acme.pk, revoked_token) == 401
    assert ByokConnection.objects.get(organization=acme).state == "active"
    assert _web_reads(web_process, jira.pk)

    started = time.monotonic()
    answer = Client().post(
        f"/api/v1/orgs/{acme.pk}/byok/revoke",
        {"reason": "SOAR playbook: key misuse"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {kill_token}",
    )
    assert answer.status_code == 200, answer.content
    wait_for(lambda: not _web_reads(web_process, jira.pk), timeout=2.0, interval=0.05)
    print(f"web process refused reads {time.monotonic() - started:.2f} s after the API revoke")
    assert AuditEvent.objects.filter(event_name="RevokeKeyAccess", organization=acme).exists()


def test_monitor_in_the_worker_detects_disable_key_in_the_moto_server(
    acme, celery_worker_process, wait_for
):
    connection = ByokConnection.objects.get(organization=acme)
    key = connection.keys.get(region="us-west-2")
    customer_side.disable_customer_key(
        account_id=ACME_AWS_ACCOUNT, region="us-west-2", key_arn=key.key_arn
    )
    run_health_monitor.delay()
    wait_for(
        lambda: ByokConnection.objects.get(pk=connection.pk).state == "revoked",
        timeout=30,
        message=lambda: celery_worker_process.log()[-3000:],
    )
    connection.refresh_from_db()
    assert "us-west-2" in connection.state_reason
    assert set(
        AppInstance.objects.filter(site__name="acme-secure").values_list("status", flat=True)
    ) == {"suspended"}
