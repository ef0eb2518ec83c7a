"""What ``bench load`` does beside locust: the data-plane load in the workers, the three
drills (revoke, crash, reload) and the watchers they need (worker reports, process CPU)."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import threading
import time

import psutil
import requests

from bench._load_stats import refusal_latency
from bench._load_tasks import DONE, REPORTS, STARTED

BATCH_TASK = "bench._load_tasks.dataplane_batch"
SLOW_TASK = "bench._load_tasks.slow_batch"
READ_CHECK_TASK = "dataplane.tasks.run_read_check_task"
TASK_HEADER = "byok_request_id"  # core.request_id.TASK_HEADER: the task's audit requestID


def log(message: str) -> None:
    print(f"[bench load] {message}", flush=True)


def children_of(pid: int) -> list[int]:
    try:
        return sorted(child.pid for child in psutil.Process(pid).children())
    except psutil.NoSuchProcess:
        return []


class Tasks:
    """Publishes tasks to the workers' broker, each with its own token (its request ID, so
    its audit events carry it); remembers every token by kind."""

    def __init__(self, broker_url: str, run_id: str):
        from celery import Celery

        self.app = Celery("bench-load", broker=broker_url)
        self.app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
        )
        self.run_id = run_id
        self.tokens: dict[str, list[str]] = {}
        self._count = itertools.count()
        self._lock = threading.Lock()

    def send(self, kind: str, task: str, args: list, *, with_token: bool = True) -> str:
        token = f"load-{kind}-{next(self._count):06d}-{self.run_id}"
        task_args = [token, *args] if with_token else args
        with self._lock:
            self.app.send_task(task, args=task_args, headers={TASK_HEADER: token})
            self.tokens.setdefault(kind, []).append(token)
        return token


class Reports(threading.Thread):
    """Collects the workers' reports (``bench._load_tasks``) from Redis as they arrive."""

    def __init__(self, redis_client):
        super().__init__(daemon=True, name="reports")
        self.redis = redis_client
        self.items: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            batch = self.redis.lpop(REPORTS, 500) or []
            self.items.extend(json.loads(item) for item in batch)
            if not batch:
                self.stop.wait(0.05)

    def since(self, moment: float) -> list[dict]:
        return [r for r in list(self.items) if r["finished"] >= moment]


def _ops(targets: list[tuple[int, list[int]]], count: int, rng: random.Random) -> list:
    ops = []
    for _ in range(count):
        app, records = rng.choice(targets)
        roll = rng.random()
        op = "r" if roll < 0.75 else ("u" if roll < 0.95 else "c")
        ops.append([app, rng.choice(records), op])
    return ops


class WorkerLoad(threading.Thread):
    """App reads and writes in the workers: ``batches_per_s`` tasks of ``ops_per_batch``
    operations over every BYOK app (75 % reads, 20 % updates, 5 % new records), and
    ``read_checks_per_s`` of the portal's own audited read check."""

    def __init__(self, tasks: Tasks, seed: dict, *, batches_per_s: float, ops_per_batch: int,
                 read_checks_per_s: float):  # fmt: skip
        super().__init__(daemon=True, name="worker-load")
        self.tasks = tasks
        self.targets = [
            (int(app), records) for org in seed["byok_orgs"] for app, records in org["apps"].items()
        ]
        self.watch = [int(a) for a in seed["revoked_apps"]]
        self.batches_per_s = batches_per_s
        self.ops_per_batch = ops_per_batch
        self.read_checks_per_s = read_checks_per_s
        self.stop = threading.Event()
        self.rng = random.Random(7)

    def run(self) -> None:
        interval = 1.0 / self.batches_per_s
        check_every = max(1, round(self.batches_per_s / self.read_checks_per_s))
        for n in itertools.count():
            if self.stop.wait(interval):
                return
            ops = _ops(self.targets, self.ops_per_batch, self.rng)
            self.tasks.send("batch", BATCH_TASK, [ops, self.watch])
            if n % check_every == 0:
                app = self.rng.choice(self.targets)[0]
                self.tasks.send("read_check", READ_CHECK_TASK, [app], with_token=False)


class Probes:
    """Reads of the revoked org's records in every web and worker process, until each one
    refuses: web reads through the bench route (new connection each, so every gunicorn worker
    gets some), worker reads as small ``dataplane_batch`` tasks."""

    def __init__(self, ctx, *, web_threads: int = 2, worker_rate: float = 25.0, burst: int = 1):
        self.ctx = ctx
        # Worker probes go out ``burst`` at a time (one per pool process): a lone task goes to
        # whichever pool process is idle first, so a lightly loaded pool can leave one process
        # without a probe for seconds, which reads as a late refusal though it read nothing.
        self.burst = max(1, burst)
        self.stop = threading.Event()
        self.web: list[tuple[int, int, float, bool]] = []  # (pid, app, time, readable)
        self.errors = 0
        self.targets = [
            (int(app), records) for app, records in ctx.seed["revoked_org"]["apps"].items()
        ]
        self.threads = [
            threading.Thread(target=self._web, daemon=True) for _ in range(web_threads)
        ] + [threading.Thread(target=self._workers, args=(worker_rate,), daemon=True)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _web(self) -> None:
        rng = random.Random()
        headers = {"X-Bench-Token": self.ctx.bench_token, "Connection": "close"}
        while not self.stop.is_set():
            app, records = rng.choice(self.targets)
            try:
                answer = requests.get(
                    f"{self.ctx.url}/__bench__/read/{app}/{rng.choice(records)}",
                    headers=headers,
                    timeout=10,
                ).json()
                self.web.append((answer["pid"], app, answer["t"], answer["readable"]))
            except (requests.RequestException, ValueError, KeyError):
                self.errors += 1
            self.stop.wait(0.03)

    def _workers(self, rate: float) -> None:
        watch = [app for app, _ in self.targets]
        rng = random.Random()
        while not self.stop.wait(self.burst / rate):
            for _ in range(self.burst):
                ops = [[app, rng.choice(records), "r"] for app, records in self.targets]
                self.ctx.tasks.send("probe", BATCH_TASK, [ops, watch])

    def worker_observations(self, since: float) -> list[tuple[int, int, float, bool]]:
        out = []
        for report in self.ctx.reports.since(since):
            pid = report["pid"]
            for app, (first_refused, last_refused, last_ok) in report["watch"].items():
                if first_refused is not None:
                    out.append((pid, int(app), first_refused, False))
                    out.append((pid, int(app), last_refused, False))
                if last_ok is not None:
                    out.append((pid, int(app), last_ok, True))
        return out


def revoke_drill(ctx, revoke) -> dict:
    """Revoke the org's access (``revoke()`` sends the real POST, returns when it was sent)
    and wait until every web and worker process refuses the org's reads."""
    web_pids = children_of(ctx.web_pid)
    worker_pids = [pid for main in ctx.worker_pids for pid in children_of(main)]
    probes = Probes(ctx, burst=len(worker_pids))
    warm_from = time.time()
    probes.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # every process has read the org's data: warm
            seen_web = {o[0] for o in probes.web if o[3]}
            seen_workers = {o[0] for o in probes.worker_observations(warm_from) if o[3]}
            if set(web_pids) <= seen_web and set(worker_pids) <= seen_workers:
                break
            time.sleep(0.1)
        sent = revoke()
        log(f"revoke POST sent; waiting for {len(web_pids)} web + {len(worker_pids)} worker pids")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            web = refusal_latency(probes.web, pids=web_pids, since=sent)
            workers = refusal_latency(
                probes.worker_observations(sent), pids=worker_pids, since=sent
            )
            if not web["never_refused"] and not workers["never_refused"]:
                break
            time.sleep(0.1)
        time.sleep(1.0)  # a little more, so a process that flickers back is caught
        web = refusal_latency(probes.web, pids=web_pids, since=sent)
        workers = refusal_latency(probes.worker_observations(sent), pids=worker_pids, since=sent)
    finally:
        probes.close()
    latencies = [web["latency_s"], workers["latency_s"]]
    return {
        "revoke_sent_at": sent,
        "revoke_all_processes_s": None if None in latencies else max(latencies),
        "revoke_web_s": web["latency_s"],
        "revoke_worker_s": workers["latency_s"],
        "revoke_per_pid_s": {"web": web["per_pid"], "worker": workers["per_pid"]},
        "revoke_last_read_s": max(
            [*web["last_read_s"].values(), *workers["last_read_s"].values()], default=None
        ),
        "revoke_processes": {"web": len(web_pids), "worker": len(worker_pids)},
        "revoke_never_refused_pids": web["never_refused"] + workers["never_refused"],
        "revoke_flickers": web["flickers"] + workers["flickers"],
        "revoke_other_app_reads": web["other_app_reads"] + workers["other_app_reads"],
        "revoke_probe_errors": probes.errors,
    }


def kill_drill(ctx, *, checks: int = 8, pause_s: float = 0.25) -> dict:
    """SIGKILL the worker pool process running a long task, mid-task."""
    seed = ctx.seed
    targets = [
        (int(app), records)
        for org in seed["byok_orgs"]
        if org["id"] != seed["revoked_org"]["id"]
        for app, records in org["apps"].items()
    ]
    ops = _ops(targets, 40, random.Random(11))
    ctx.redis.delete(STARTED)
    token = ctx.tasks.send("slow", SLOW_TASK, [ops, targets[0][0], checks, pause_s])
    started = None
    deadline = time.monotonic() + 30
    while started is None and time.monotonic() < deadline:
        item = ctx.redis.blpop(STARTED, timeout=1)
        if item and json.loads(item[1])["token"] == token:
            started = json.loads(item[1])
    if started is None:
        return {"kill_error": "the long task did not start within 30 s", "kill_token": token}
    time.sleep(checks * pause_s / 3)  # a third of the way through
    os.kill(started["pid"], signal.SIGKILL)
    killed_at = time.time()
    log(f"SIGKILLed worker process {started['pid']} mid-task")
    deadline = time.monotonic() + 60
    while not ctx.redis.sismember(DONE, token) and time.monotonic() < deadline:
        time.sleep(0.2)
    done = bool(ctx.redis.sismember(DONE, token))
    return {
        "kill_token": token,
        "killed_pid": started["pid"],
        "kill_expected_checks": checks,
        "killed_task_completed_s": round(time.time() - killed_at, 2) if done else None,
    }


def reload_drill(ctx, *, cookie: str) -> dict:
    """HUP to gunicorn's master (a graceful reload: new workers, old ones finish their
    requests) while a prober keeps opening a page; counts what failed."""
    old = set(children_of(ctx.web_pid))
    failures, answers, stop = [], [], threading.Event()

    def probe():
        while not stop.is_set():
            started = time.time()
            try:
                response = requests.get(
                    f"{ctx.url}/",
                    headers={"Cookie": cookie, "Connection": "close"},
                    allow_redirects=False,
                    timeout=30,
                )
                answers.append(time.time() - started)
                if response.status_code != 200:
                    failures.append(f"{response.status_code}")
            except requests.RequestException as exc:
                failures.append(type(exc).__name__)
            stop.wait(0.05)

    threads = [threading.Thread(target=probe, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    hup_at = time.time()
    os.kill(ctx.web_pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = set(children_of(ctx.web_pid))
        if not (now & old) and len(now) >= len(old):
            break
        time.sleep(0.1)
    replaced_at = time.time()
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=35)
    return {
        "reload_window": [hup_at - 1.0, time.time()],
        "reload_replaced_s": round(replaced_at - hup_at, 2),
        "reload_probe_requests": len(answers) + len(failures),
        "reload_probe_failures": len(failures),
        "reload_probe_max_ms": round(max(answers, default=0) * 1000, 1),
        "reload_workers_replaced": not (set(children_of(ctx.web_pid)) & old),
    }


class CpuMeter(threading.Thread):
    """CPU seconds used by each role's processes (the tree under each root pid), sampled
    every second (a process that exits loses at most its last second)."""

    def __init__(self, roots: dict[str, list[int]]):
        super().__init__(daemon=True, name="cpu")
        self.roots = roots
        self.last: dict[str, dict[int, float]] = {}
        self.base: dict[str, dict[int, float]] | None = None
        self.stop = threading.Event()

    def _sample(self) -> None:
        for role, pids in list(self.roots.items()):
            self.last.setdefault(role, {})
            for root in pids:
                try:
                    process = psutil.Process(root)
                    tree = [process, *process.children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for proc in tree:
                    try:
                        times = proc.cpu_times()
                    except psutil.NoSuchProcess:
                        continue
                    self.last[role][proc.pid] = times.user + times.system

    def mark(self) -> None:
        """Start counting from now."""
        self._sample()
        self.base = {role: dict(values) for role, values in self.last.items()}

    def seconds(self) -> dict[str, float]:
        self._sample()
        base = self.base or {}
        return {
            role: round(sum(v - base.get(role, {}).get(pid, 0.0) for pid, v in values.items()), 1)
            for role, values in self.last.items()
        }

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self._sample()
