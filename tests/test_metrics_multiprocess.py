"""Under gunicorn and Celery every process counts on its own: one scrape must show the sum.

Two short-lived processes count (as a web worker and a Celery worker would) with
``PROMETHEUS_MULTIPROC_DIR`` set, and exit; a third serves /metrics from the same directory.
The third one's database is not migrated: the scrape still answers, and says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent

COUNT = """
import sys, time
from core import metrics
hits, last_run = int(sys.argv[1]), float(sys.argv[2])
metrics.DEK_CACHE_HITS.inc(hits)
metrics.aws_call_done("kms", "Decrypt", None, time.perf_counter())
metrics.aws_call_done("kms", "Decrypt", "throttled", time.perf_counter(), 2)
metrics.HEALTH_MONITOR_LAST_RUN.set(last_run)
"""

SCRAPE = """
import django
django.setup()
from django.test import RequestFactory
from byokportal.metrics import metrics_view
request = RequestFactory().get("/metrics", HTTP_AUTHORIZATION="Bearer multi-token-123456")
response = metrics_view(request)
assert response.status_code == 200, response.status_code
sys.stdout.write(response.content.decode())
"""


def _run(code: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_one_scrape_sums_every_process_including_those_that_exited(tmp_path):
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),  # created by core.metrics
        "METRICS_TOKEN": "multi-token-123456",
        "DJANGO_SETTINGS_MODULE": "byokportal.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
        "PYTHONPATH": str(ROOT),
    }
    _run(COUNT, "5", "100", env=env)
    _run(COUNT, "7", "200", env=env)
    body = _run("import sys\n" + SCRAPE, env=env)

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    decrypt = {"service": "kms", "operation": "Decrypt"}
    assert value("byok_dek_cache_lookups_total", result="hit") == 12
    assert value("byok_aws_calls_total", outcome="ok", **decrypt) == 2
    assert value("byok_aws_calls_total", outcome="throttled", **decrypt) == 2
    assert value("byok_aws_retried_attempts_total", **decrypt) == 4
    assert value("byok_aws_call_duration_seconds_count", **decrypt) == 4
    # A timestamp gauge is the newest of all processes, not their sum.
    assert value("byok_health_monitor_last_run_timestamp_seconds") == 200
    # The database could not be read: the scrape says so instead of failing.
    assert value("byok_metrics_database_up") == 0
