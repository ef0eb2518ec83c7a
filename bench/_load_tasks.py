"""The Celery app of ``bench load``'s workers (``CELERY_APP=bench._load_tasks`` in the
Procfile): the portal's app, plus two bench-only tasks for the data-plane load.

They exist because the portal has no task that *writes* app data (apps do that, not the
portal) and none that runs long enough to be killed mid-task on purpose. Both go through the
data plane's public functions (``read_record``, ``update_record``, ``store_record``) and the
read check's service (``dataplane.services.record_read_check``, audited as ``AppReadCheck``),
in the worker process, as an app's background job would.

Each run reports to the broker's Redis (the bench reads it; nothing of the portal does):
``RPUSH bench:load:reports`` one JSON object (this pool process's pid, what it read, wrote
and was refused, and per app in ``watch`` — the organization the run revokes — the server
time of its first and last refused and its last successful read); ``SADD bench:load:done`` the
task's token. ``slow_batch`` also reports ``RPUSH bench:load:started`` when it begins (the
crash drill kills its process then). Refused reads of other organizations' apps and any other
exception are counted, never raised: a task that raises would not report.
"""

from __future__ import annotations

import json
import os
import time

from celery import shared_task

from byokportal.celery import app  # noqa: F401  (``celery -A bench._load_tasks``)

REPORTS = "bench:load:reports"
STARTED = "bench:load:started"
DONE = "bench:load:done"

_redis = None
_redis_pid = 0


def _broker():
    global _redis, _redis_pid
    if _redis is None or _redis_pid != os.getpid():
        import redis

        _redis = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
        _redis_pid = os.getpid()
    return _redis


class _Tally:
    def __init__(self, token: str, kind: str, watch: list[int]):
        self.report = {
            "token": token,
            "kind": kind,
            "pid": os.getpid(),
            "started": time.time(),
            "reads": 0,
            "writes": 0,
            "refused": 0,
            "refused_unwatched": 0,
            "errors": 0,
            "error": "",
            # watched app id → [first refused, last refused, last readable] (server time)
            "watch": {},
        }
        self.watch = set(watch)

    def _watched(self, app_id: int) -> list:
        return self.report["watch"].setdefault(str(app_id), [None, None, None])

    def ok(self, app_id: int, *, write: bool) -> None:
        self.report["writes" if write else "reads"] += 1
        if app_id in self.watch and not write:
            self._watched(app_id)[2] = time.time()

    def refused(self, app_id: int) -> None:
        self.report["refused"] += 1
        if app_id not in self.watch:
            self.report["refused_unwatched"] += 1
            return
        seen, now = self._watched(app_id), time.time()
        if seen[0] is None:
            seen[0] = now
        seen[1] = now

    def error(self, exc: Exception) -> None:
        self.report["errors"] += 1
        self.report["error"] = f"{type(exc).__name__}: {exc}"[:300]

    def send(self) -> None:
        self.report["finished"] = time.time()
        pipe = _broker().pipeline()
        pipe.rpush(REPORTS, json.dumps(self.report))
        pipe.sadd(DONE, self.report["token"])
        pipe.execute()


def _run_ops(tally: _Tally, ops: list) -> None:
    """``ops``: ``[app id, record id, "r" | "u" | "c"]`` — read, update, create a record."""
    from dataplane.models import AppRecord
    from dataplane.records import AppSuspended, read_record, store_record, update_record

    for app_id, record_id, op in ops:
        try:
            if op == "r":
                read_record(app_instance=app_id, record_id=record_id)
            elif op == "u":
                record = AppRecord.objects.get(pk=record_id, app_instance_id=app_id)
                update_record(record=record, plaintext=f"edited at {time.time():.3f}".encode())
            else:
                store_record(app_instance=app_id, kind="comment", plaintext=b"bench comment " * 20)
        except AppSuspended:
            tally.refused(app_id)
        except Exception as exc:  # counted and reported, so the bench sees it
            tally.error(exc)
        else:
            tally.ok(app_id, write=op != "r")


@shared_task(acks_late=True)
def dataplane_batch(token: str, ops: list, watch: list) -> None:
    """App reads and writes in this worker process; reports what happened."""
    tally = _Tally(token, "batch", watch)
    _run_ops(tally, ops)
    tally.send()


@shared_task(acks_late=True)
def slow_batch(token: str, ops: list, check_app: int, checks: int, pause_s: float) -> None:
    """A long job (``checks`` rounds of ops, an audited read check and a pause): the crash
    drill kills the process running it. Redelivered, it runs again from the start."""
    from dataplane.services import record_read_check

    _broker().rpush(STARTED, json.dumps({"token": token, "pid": os.getpid(), "t": time.time()}))
    tally = _Tally(token, "slow", [])
    per_round = max(1, len(ops) // max(1, checks))
    for index in range(checks):
        _run_ops(tally, ops[index * per_round : (index + 1) * per_round])
        try:
            record_read_check(app_instance_id=check_app)
        except Exception as exc:  # counted and reported
            tally.error(exc)
        time.sleep(pause_s)
    tally.send()
