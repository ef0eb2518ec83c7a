"""What one request of each page group costs, for ``docs/capacity.md``: CPU milliseconds in the
gunicorn workers and in the PostgreSQL backends of the load database, one request at a time
(no queueing, no contention between our own requests), before the load starts. CPU time moves
less with other work on the machine than wall time does, but it is not immune to it (caches,
frequency), so it is still an indication, per request, of what a core buys."""

from __future__ import annotations

import random
import time

import psutil


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _backends(database: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info.get("cmdline") or [])
        if process.info.get("name") == "postgres" and f" {database} " in f"{cmdline} ":
            found.append(process)
    return found


def page_costs(url: str, web_pid: int, database: str, plan: dict, *, warm: int = 6,
               measured: int = 15) -> dict:  # fmt: skip
    """``plan``: ``{group: (requests.Session or headers dict, [paths])}``. Returns ``{group:
    {"web_cpu_ms", "db_cpu_ms", "wall_ms"}}`` per request: totals over ``measured`` requests
    divided by their number, after ``warm`` unmeasured rounds over every path (so the four
    workers have each page's code and each app's data key warm: a cold data key costs KMS
    calls and their audit events, which is not the steady state)."""
    import requests

    rng = random.Random(5)
    web = [psutil.Process(web_pid), *psutil.Process(web_pid).children()]
    out = {}
    for group, (client, paths) in plan.items():
        get = client.get if isinstance(client, requests.Session) else None

        def fetch(path, get=get, client=client):
            if get is not None:
                return get(f"{url}{path}", allow_redirects=False, timeout=60)
            return requests.get(f"{url}{path}", headers=client, timeout=60)

        for path in paths * warm:  # every page (and app) in every worker, most likely
            fetch(path)
        backends = _backends(database)
        web_before, db_before, started = _cpu(web), _cpu(backends), time.perf_counter()
        statuses = [fetch(rng.choice(paths)).status_code for _ in range(measured)]
        wall = time.perf_counter() - started
        out[group] = {
            "web_cpu_ms": round((_cpu(web) - web_before) * 1000 / measured, 1),
            "db_cpu_ms": round((_cpu(backends) - db_before) * 1000 / measured, 1),
            "wall_ms": round(wall * 1000 / measured, 1),
            "non_200": sum(status != 200 for status in statuses),
        }
    return out
