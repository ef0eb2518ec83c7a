"""gunicorn's configuration for the portal (``gunicorn -c deploy/gunicorn.conf.py``).

Everything an operator tunes comes from the environment: ``PORT`` / ``GUNICORN_BIND``,
``WEB_CONCURRENCY`` (worker processes), ``GUNICORN_THREADS`` (threads per worker: gthread
when > 1), ``GUNICORN_TIMEOUT`` and ``GUNICORN_GRACEFUL_TIMEOUT`` (seconds a worker has to
finish its requests on HUP/TERM before it is killed). HUP restarts the workers gracefully;
USR2 then QUIT to the old master deploys new code. The access log is one JSON object per
request on stdout, with the request ID the portal answered with (``X-Request-ID``).
"""

import json
import os
from datetime import UTC, datetime

from gunicorn.glogging import Logger

bind = os.environ.get("GUNICORN_BIND") or f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# The master loads the app once and forks ready workers: a HUP (graceful restart: new workers,
# old ones finish their requests) serves on at once instead of stalling while each new worker
# imports Django. New *code* is deployed with USR2 (a new master), then QUIT to the old one.
preload_app = True
accesslog = "-"
errorlog = "-"
# The TLS proxy in front is the only client; its address is trusted for X-Forwarded-*.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")


class JsonAccessLogger(Logger):
    """gunicorn's logger, with each access line a JSON object (values escaped by json)."""

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        headers = dict(resp.headers or [])
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "type": "access",
            "request_id": headers.get("X-Request-ID", "-"),
            "remote": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": int(status),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 1),
            "user_agent": environ.get("HTTP_USER_AGENT", "-"),
            "pid": os.getpid(),
        }
        self.access_log.info(json.dumps(line))


logger_class = JsonAccessLogger


# PROMETHEUS_MULTIPROC_DIR is shared with the Celery processes: whoever starts the whole set
# empties it first (scripts/prod_run.py; on a host, the units' ExecStartPre), never gunicorn,
# whose restart alone would wipe the running workers' figures.


def child_exit(server, worker):
    """A worker that exits leaves its live gauges behind unless it is marked dead."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def when_ready(server):
    """In the master, after the app is loaded and before the first fork: every worker (also
    those a HUP starts) begins with its imports done and its templates compiled."""
    from byokportal.warmup import warm_up

    warm_up()


def post_worker_init(worker):
    """In each new worker, before it accepts a request: its own database connection (a
    connection cannot be shared across the fork), so a worker that a HUP starts does not make
    its first caller wait for the connect. Kept by ``CONN_MAX_AGE``; a failure here is left
    to the first request to report."""
    from django.db import DatabaseError, connection

    try:
        connection.ensure_connection()
    except DatabaseError:
        pass
