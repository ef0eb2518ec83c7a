"""Revocation reaches every process: a web server process and a Celery worker process."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from audit.models import AuditEvent
from connections import services as revocation
from connections.models import ByokConnection
from connections.tasks import run_health_monitor
from dataplane.tasks import run_read_check_task
from demo import customer_side
from demo.acme import ACME_AWS_ACCOUNT, seed_demo_byok
from demo.seed import seed_demo_world
from orgs.models import AppInstance, User
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
