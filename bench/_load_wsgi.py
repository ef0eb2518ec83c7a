"""The web processes of ``bench load``: the portal, plus one route through which the load test
reads app data with the data plane *in this gunicorn worker* (``WSGI_APP`` in the Procfile).

The portal's own pages never decrypt (a GET changes nothing); the vendor's apps read this way.
``GET /__bench__/read/<app id>/<record id>`` reads one record with ``read_record`` — the hot
path, the access guard's answer at most ``DEK_GUARD_TTL_S`` old, exactly as an app would — and
answers JSON: this worker's pid, the server's clock, readable or not and the refusal's cause;
never the plaintext. It answers only a request carrying the run's ``X-Bench-Token``
(``BENCH_LOAD_TOKEN``), and only in the processes ``bench load`` starts on loopback.
"""

import hmac
import json
import os
import time

from django.db import close_old_connections

from byokportal.wsgi import application as portal
from dataplane.records import AppSuspended, read_record

PREFIX = "/__bench__/read/"
_TOKEN = os.environ.get("BENCH_LOAD_TOKEN", "")


def _answer(start_response, status: str, body: dict) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if not path.startswith(PREFIX):
        return portal(environ, start_response)
    token = environ.get("HTTP_X_BENCH_TOKEN", "")
    if not _TOKEN or not hmac.compare_digest(token.encode(), _TOKEN.encode()):
        return _answer(start_response, "404 Not Found", {"error": "not found"})
    try:
        app_id, record_id = (int(part) for part in path.removeprefix(PREFIX).strip("/").split("/"))
    except ValueError:
        return _answer(start_response, "404 Not Found", {"error": "not found"})
    answer = {"pid": os.getpid(), "app": app_id}
    close_old_connections()  # what Django's handler does around each request
    try:
        size = len(read_record(app_instance=app_id, record_id=record_id))
    except AppSuspended as exc:
        answer.update(t=time.time(), readable=False, cause=exc.cause)
    else:
        answer.update(t=time.time(), readable=True, bytes=size)
    finally:
        close_old_connections()
    return _answer(start_response, "200 OK", answer)
