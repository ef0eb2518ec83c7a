"""``/metrics``: Prometheus text format, for the operator's scraper only.

Protected by a bearer token (``METRICS_TOKEN``), compared in constant time: without one
configured the endpoint does not exist (404); a request without the right token gets 401 with
``WWW-Authenticate: Bearer`` — the path is no secret (it is the convention), and a scraper
with a stale token then shows "401 Unauthorized" rather than a puzzling "404 Not Found".

What a scrape returns:

* every counter and histogram of every process — django-prometheus' request metrics and the
  portal's own (``core.metrics``). Under gunicorn and Celery (``PROMETHEUS_MULTIPROC_DIR``
  set) each process writes its values to that directory and the scrape sums them
  (prometheus_client's ``MultiProcessCollector``, into a fresh registry per scrape); without
  it (tests, ``make run``) this process's registry is the whole story;
* gauges read from the database now (:class:`DatabaseCollector`): connections by state,
  re-encryption progress, CloudTrail ingestion lag, the webhook backlog. A handful of
  aggregate queries per scrape, reads only: a GET of /metrics writes no row and calls no AWS.

docs/operations.md lists the metrics and what to alert on.
"""

from __future__ import annotations

import hmac
import logging
import os
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Min, Q
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponse, HttpResponseNotAllowed
from django.utils import timezone
from django.views.decorators.cache import never_cache
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

from audit.models import CloudTrailSource, WebhookDelivery
from connections.models import ByokConnection
from dataplane import dek_cache
from reencryption.models import ReencryptionJob

log = logging.getLogger(__name__)


def _age_s(now: datetime, then: datetime | None) -> float:
    return max((now - then).total_seconds(), 0.0) if then is not None else 0.0


class DatabaseCollector:
    """Gauges computed from the database at scrape time (in the scraping process only)."""

    def collect(self):
        up = GaugeMetricFamily(
            "byok_metrics_database_up",
            "1 when the scrape could read the database-derived gauges, 0 when it could not.",
        )
        try:
            families = list(self._families(timezone.now()))
        except DatabaseError:
            log.warning("Metrics: the database-derived gauges could not be read", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, now: datetime):
        yield self._connections()
        yield from self._reencryption(now)
        yield from self._ingestion(now)
        yield from self._webhooks(now)

    @staticmethod
    def _connections():
        return _rows_by_state(ByokConnection, "byok_connections", "BYOK connections by state.")

    @staticmethod
    def _reencryption(now: datetime):
        jobs = _rows_by_state(
            ReencryptionJob, "byok_reencryption_jobs", "Re-encryption jobs by state."
        )
        yield jobs
        labels = ["job", "mode", "state", "phase"]
        done = GaugeMetricFamily(
            "byok_reencryption_job_units_done",
            "Active re-encryption jobs: data keys (rewrap) or records (rotate) done so far.",
            labels=labels,
        )
        total = GaugeMetricFamily(
            "byok_reencryption_job_units_total",
            "Active re-encryption jobs: data keys or records to do.",
            labels=labels,
        )
        ratio = GaugeMetricFamily(
            "byok_reencryption_job_progress_ratio",
            "Active re-encryption jobs: overall progress, 0 to 1 (verification included).",
            labels=labels,
        )
        heartbeat = GaugeMetricFamily(
            "byok_reencryption_job_heartbeat_age_seconds",
            "Running re-encryption jobs: seconds since the run's last heartbeat.",
            labels=labels,
        )
        active = ReencryptionJob.objects.filter(state__in=ReencryptionJob.ACTIVE_STATES).only(
            "mode",
            "state",
            "phase",
            "done",
            "total",
            "verified",
            "verify_total",
            "started_at",
            "heartbeat_at",
        )
        for job in active.order_by("pk"):
            values = [str(job.pk), job.mode, job.state, job.phase]
            done.add_metric(values, job.done)
            total.add_metric(values, job.total)
            ratio.add_metric(values, job.percent / 100)
            if job.state == ReencryptionJob.State.RUNNING and job.heartbeat_at is not None:
                heartbeat.add_metric(values, _age_s(now, job.heartbeat_at))
        yield from (done, total, ratio, heartbeat)

    @staticmethod
    def _ingestion(now: datetime):
        sources = CloudTrailSource.objects.filter(enabled=True).aggregate(
            ok=Count("pk", filter=Q(last_error="")),
            failing=Count("pk", filter=~Q(last_error="")),
            oldest=Min(Coalesce("last_success_at", "created_at")),
        )
        by_status = GaugeMetricFamily(
            "byok_cloudtrail_sources",
            "Enabled CloudTrail sources: ok, or failing (their last import run failed).",
            labels=["status"],
        )
        by_status.add_metric(["ok"], sources["ok"])
        by_status.add_metric(["failing"], sources["failing"])
        yield by_status
        yield GaugeMetricFamily(
            "byok_cloudtrail_ingestion_lag_seconds",
            "The worst enabled CloudTrail source: seconds since its last successful import run "
            "(since it was configured, if none succeeded yet); 0 without sources.",
            value=_age_s(now, sources["oldest"]),
        )

    @staticmethod
    def _webhooks(now: datetime):
        Status = WebhookDelivery.Status
        backlog = WebhookDelivery.objects.filter(
            status__in=[Status.PENDING, Status.FAILED], endpoint__enabled=True
        ).aggregate(
            pending=Count("pk", filter=Q(status=Status.PENDING)),
            failed=Count("pk", filter=Q(status=Status.FAILED)),
            oldest=Min("created_at", filter=Q(status=Status.PENDING)),
        )
        deliveries = GaugeMetricFamily(
            "byok_webhook_deliveries",
            "Webhook deliveries of enabled webhooks not delivered: pending (being tried) or "
            "failed (given up; the org admin may retry them).",
            labels=["status"],
        )
        deliveries.add_metric(["pending"], backlog["pending"])
        deliveries.add_metric(["failed"], backlog["failed"])
        yield deliveries
        yield GaugeMetricFamily(
            "byok_webhook_oldest_pending_age_seconds",
            "Age of the oldest pending webhook delivery; 0 when none is pending.",
            value=_age_s(now, backlog["oldest"]),
        )


def _registries() -> list:
    """Every process's counters (multiprocess) or this process's, then the database's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        MultiProcessCollector(processes)
    else:
        processes = REGISTRY
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector())
    return [processes, database]


def _authorized(request, token: str) -> bool:
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(supplied.strip().encode(), token.encode())


@never_cache
def metrics_view(request):
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("Metrics are not enabled here.")
    if not _authorized(request, token):
        response = HttpResponse(
            "Send the metrics token: Authorization: Bearer <METRICS_TOKEN>\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    dek_cache.CACHE.export_hits()  # this process's hits up to now, not up to its next lease
    body = b"".join(generate_latest(registry) for registry in _registries())
    # The classic text format (0.0.4): every Prometheus version reads it; our names need no
    # escaping, so it is byte for byte what the 1.0.0 format would be.
    return HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)


def _rows_by_state(model, name: str, documentation: str) -> GaugeMetricFamily:
    """A gauge of ``model``'s rows per value of its ``state`` field (every choice, 0 included)."""
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    rows = model.objects.order_by().values_list("state").annotate(n=Count("pk"))
    counts = dict(rows.values_list("state", "n"))
    for state, _label in model._meta.get_field("state").choices:
        family.add_metric([state], counts.get(state, 0))
    return family
