"""``python -m bench load``: the production launch under load, with the kill switch pulled, a
worker killed and the web reloaded while it is busy.

What runs: ``make prod-run``'s own launch (``scripts/prod_run.launched``: PostgreSQL and Redis,
moto as the customer's AWS, migrate, ``seed_demo``, then beat, ``CELERY_WORKERS``=2 Celery
workers of ``CELERY_CONCURRENCY``=2 processes and gunicorn with ``WEB_CONCURRENCY``=4 workers,
each from the Procfile through ``scripts/proc.py``) on its own ports (8140, moto 5140), its own
database (``byokportal_load``, recreated each run) and Redis db (14, flushed). The Procfile's
``WSGI_APP`` / ``CELERY_APP`` point the processes at ``bench._load_wsgi`` (the portal plus a
data-plane read route) and ``bench._load_tasks`` (the portal's tasks plus two data-plane load
tasks). ``bench._load_seed`` adds orgs, people and ~17,500 audit events to the demo world.

How it drives it: people sign in through the sign-in pages (staff and the revoking admin with
a one-time code from their authenticator, computed from the TOTP device's key), then locust
(``bench/_load_locustfile.py``, headless, loopback) sends org admins, reps, support staff and
apps reading data in the web processes, each person one page every ``PACING_S`` seconds. Beside
it, ``bench._load_drills.WorkerLoad`` keeps the workers busy with app reads and writes and the
portal's audited read check. First a calibration (at most ``CALIBRATE_S``) adds people while
every page group's p95 stays under ``CALIBRATE_P95_MS``; the main run (``RUN_S``) then holds
``SUSTAIN_SHARE`` (0.8) of that many people, and during it:

1. at ``REVOKE_AT_S``, the revoked org's admin revokes key access with the real POST (two-factor
   session, org name typed, password re-entered); every gunicorn worker and every Celery pool
   process is probed (web: the read route; workers: read tasks; each answer names its pid)
   until each refuses that org's reads: ``revoke_all_processes_s`` (from the POST being sent;
   ``revoke_after_commit_s`` from the revocation's commit);
2. at ``KILL_AT_S``, the pool process running a long task is SIGKILLed: ``lost_tasks`` counts
   tasks of the run that never completed (after a drain of up to ``DRAIN_S``),
   ``lost_audit_events`` the hash-chain links missing (every chain, head to base) plus
   read-check tasks without their ``AppReadCheck`` event plus the killed task's checks missing;
3. at ``RELOAD_AT_S``, gunicorn's master gets HUP: ``errors_during_reload`` counts failed
   requests (locust's and a prober's) from a second before the HUP until every old worker is
   gone and two seconds more.

Figures (JSON, last line):

* ``page_groups``: per group requests, failures, rps, p50/p95/p99/max ms over the whole main
  run, drills included (exact percentiles from locust's per-request samples);
  ``p95_ms_worst`` / ``p95_worst_group``; ``p95_ms_steady`` / ``p95_ms_worst_steady``: the same
  without the reload's window (requests queued behind the new workers' start-up);
  ``requests_per_s`` and ``users`` (the rate and people the run sustained), ``errors``
  (failed requests: a non-200 page, a redirect, a refused read of an org not revoked);
  ``calibration_steps`` / ``calibration_target_met`` / ``calibrated_users`` (the main run holds
  ``SUSTAIN_SHARE`` of them: the drills come on top of the pages).
* ``revoke_all_processes_s`` (from the POST being sent), ``revoke_after_commit_s`` (from the
  connection's ``revoked_at``), ``revoke_post_ms``, ``revoke_web_s`` / ``revoke_worker_s``
  (``revoke_per_pid_s``; ``revoke_last_read_s``: the last successful read of the org by any
  process after the POST),
  ``revoke_processes``, ``revoke_never_refused_pids``, ``revoke_flickers`` (a process reading an
  app again after refusing it: must be 0), ``revoke_other_app_reads`` (a process reading one
  app of the org after refusing another, inside the access guard's per-app memo).
* ``lost_tasks``, ``lost_audit_events``, ``audit`` (chains, gaps, read checks missing, the
  killed task's events, key-usage events of the main run by operation),
  ``killed_task_completed_s``; ``errors_during_reload``, ``reload_replaced_s``,
  ``reload_probe_max_ms``.
* ``cost_per_request``: CPU ms per request of each group in the gunicorn workers and in
  PostgreSQL, one request at a time before the load (``bench/_load_cost.py``);
  ``dataplane_workers`` (operations, refusals, errors, ``cpu_ms_per_op`` including Celery's own
  cost); ``kms_calls_per_1k_data_ops``; ``cpu_s`` per role during the main run;
  ``load_avg_before`` / ``load_avg_after``.

Environment overrides: ``BENCH_LOAD_RUN_S`` (main run, 90), ``BENCH_LOAD_USERS`` (skip the
calibration). The run takes about 5 minutes: start-up and seeding ~1–1.5, calibration ≤ 1.5,
main run 1.5, drain and stop ~0.5. Logs of every process: ``var/load/logs/``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from bench._load_cost import page_costs
from bench._load_drills import (
    CpuMeter,
    Reports,
    Tasks,
    WorkerLoad,
    kill_drill,
    log,
    reload_drill,
    revoke_drill,
)
from bench._load_http import revoke, sign_in
from bench._load_stats import failures_between, group_figures, read_samples, worst_p95
from bench._load_tasks import DONE

ROOT = Path(__file__).resolve().parent.parent
PORT, MOTO_PORT = 8140, 5140
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/byokportal_load"
BROKER_URL = "redis://127.0.0.1:6379/14"
VAR = ROOT / "var" / "load"
PROCESSES = {"WEB_CONCURRENCY": "4", "GUNICORN_THREADS": "1", "CELERY_WORKERS": "2",
             "CELERY_CONCURRENCY": "2"}  # fmt: skip
PACING_S = 1.0
RUN_S = int(os.environ.get("BENCH_LOAD_RUN_S", "90"))
REVOKE_AT_S, KILL_AT_S, RELOAD_AT_S = 20, 40, 60
CALIBRATE_P95_MS, CALIBRATE_S = 180, 80
# Calibration steps are 10 s of pages alone; the main run lasts 90 s with the revoke, kill and
# reload drills on top, and its p95 came out 1.5-2x a step's at the same count. It holds this
# share of the calibrated people: the rate the machine sustains *with* the drills.
SUSTAIN_SHARE = 0.8
CALIBRATION = {"start_users": 8, "min_users": 4, "growth": 1.6, "warmup_s": 8, "step_s": 10,
               "max_users": 200}  # fmt: skip
WORKER_LOAD = {"batches_per_s": 4.0, "ops_per_batch": 8, "read_checks_per_s": 1.0}
DRAIN_S = 60


def run() -> dict:
    sys.path.insert(0, str(ROOT))
    from scripts import prod_run, supervise

    supervise.TAG = "bench load"
    load_before = os.getloadavg()
    launch = prod_run.Launch(
        port=PORT, moto_port=MOTO_PORT, var=VAR, database_url=DATABASE_URL,
        broker_url=BROKER_URL, logs=VAR / "logs",
    )  # fmt: skip
    for old in (VAR / "logs").glob("*.log"):
        old.unlink()
    env = prod_run.production_env(launch)
    bench_token = secrets.token_urlsafe(24)
    env.update(PROCESSES, WSGI_APP="bench._load_wsgi:application", CELERY_APP="bench._load_tasks",
               BENCH_LOAD_TOKEN=bench_token)  # fmt: skip
    import redis

    broker = redis.Redis.from_url(BROKER_URL)
    broker.flushdb()  # this bench's own db: stale tasks of an earlier run
    seed_path = VAR / "seed.json"

    def seed(seed_env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "bench._load_seed", str(seed_path)]
        seed_env = {**seed_env, "DEBUG": "1", "DEMO_ENABLED": "1"}
        with (VAR / "logs" / "seed.log").open("ab") as out:
            subprocess.run(command, cwd=ROOT, env=seed_env, check=True, stdout=out, stderr=out)

    previous = {s: signal.signal(s, supervise._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        with prod_run.launched(launch, env, fresh_database=True, after_seed=seed) as children:
            log(f"up in {time.monotonic() - started:.0f} s")
            result = _drive(launch, env, children, seed_path, broker, bench_token)
        result["load_avg_before"] = [round(x, 2) for x in load_before]
        return result
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _sign_in_everyone(url: str, seed: dict) -> tuple[dict, dict]:
    """``({role: [{email, org, cookies}]}, {email: requests.Session})`` — in parallel."""
    password = seed["password"]
    people = [("admin", a["email"], a["org"], None) for a in seed["admins"]]
    keys = {seed["revoker"]["email"]: seed["revoker"]["totp_key"]}
    people = [(role, email, org, keys.get(email)) for role, email, org, _ in people]
    people += [("rep", p["email"], None, p["totp_key"]) for p in seed["reps"]]
    people += [("support", p["email"], None, p["totp_key"]) for p in seed["supports"]]
    sessions, errors = {}, []

    def one(email, key):
        try:
            sessions[email] = sign_in(url, email, password, key)
        except Exception as exc:  # reported below
            errors.append(f"{email}: {exc}")

    threads = [threading.Thread(target=one, args=(e, k)) for _r, e, _o, k in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit("[bench load] sign-in failed: " + "; ".join(errors))
    by_role: dict[str, list] = {}
    for role, email, org, _key in people:
        cookies = sessions[email].cookies.get_dict()
        by_role.setdefault(role, []).append({"email": email, "org": org, "cookies": cookies})
    return by_role, sessions


def _locust(launch, config_path: Path, name: str, *, users: int | None, run_s: int | None,
            calibrate: Path | None = None) -> subprocess.Popen:  # fmt: skip
    command = [
        str(Path(sys.executable).parent / "locust"),
        "-f", str(ROOT / "bench" / "_load_locustfile.py"),
        "--headless", "--host", launch.url, "--only-summary", "--loglevel", "WARNING",
        "--stop-timeout", "10",
    ]  # fmt: skip
    samples = VAR / f"{name}-samples.csv"
    samples.unlink(missing_ok=True)
    env = {
        **os.environ,
        "BENCH_LOAD_CONFIG": str(config_path),
        "BENCH_LOAD_SAMPLES": str(samples),
        "PYTHONUNBUFFERED": "1",
    }
    if calibrate is not None:
        env.update(BENCH_LOAD_MODE="calibrate", BENCH_LOAD_CALIBRATION=str(calibrate))
    else:
        command += ["--users", str(users), "--spawn-rate", str(users), "--run-time", f"{run_s}s"]
    out = (VAR / "logs" / f"locust-{name}.log").open("ab")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    _LOCUSTS.append(proc)
    return proc


_LOCUSTS: list[subprocess.Popen] = []


def _stop_locusts() -> None:
    """Kill any locust still running (an interrupted or failed run)."""
    while _LOCUSTS:
        proc = _LOCUSTS.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    """Until locust ends its run; past ``timeout`` it is asked to stop, then killed."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _drive(launch, env, children, seed_path, broker, bench_token) -> dict:
    seed = json.loads(seed_path.read_text())
    revoked = next(o for o in seed["byok_orgs"] if o["id"] == seed["revoked_org"]["id"])
    seed["revoked_org"] = revoked
    seed["revoked_apps"] = [int(a) for a in revoked["apps"]]
    web = children[-1]
    workers = [c for c in children if c.name.startswith("worker-")]
    sessions, http = _sign_in_everyone(launch.url, seed)
    log(f"signed in {sum(len(v) for v in sessions.values())} people")
    config = {
        "pacing_s": PACING_S,
        "sessions": sessions,
        "byok_orgs": seed["byok_orgs"],
        "revoked_apps": seed["revoked_apps"],
        "bench_token": bench_token,
        "requests": seed["requests"],
        "event_names": seed["event_names"],
        "regions": seed["regions"],
        "calibration": {**CALIBRATION, "target_p95_ms": CALIBRATE_P95_MS, "max_s": CALIBRATE_S},
    }
    config_path = VAR / "locust-config.json"
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle)

    result: dict = {"pacing_s": PACING_S, "processes": PROCESSES, "worker_load": WORKER_LOAD}
    plan = _cost_plan(seed, http, bench_token)
    result["cost_per_request"] = page_costs(launch.url, web.proc.pid, "byokportal_load", plan)
    log(f"cost per request: {result['cost_per_request']}")
    tasks = Tasks(BROKER_URL, secrets.token_hex(4))
    reports = Reports(broker)
    reports.start()
    ctx = SimpleNamespace(  # what the drills need
        url=launch.url,
        web_pid=web.proc.pid,
        worker_pids=[w.proc.pid for w in workers],
        redis=broker,
        seed=seed,
        tasks=tasks,
        reports=reports,
        bench_token=bench_token,
    )
    load = WorkerLoad(tasks, seed, **WORKER_LOAD)
    load.start()
    try:
        users = int(os.environ.get("BENCH_LOAD_USERS", "0")) or None
        if users is None:
            calibration_path = VAR / "calibration.json"
            calibration_path.unlink(missing_ok=True)
            proc = _locust(launch, config_path, "calibrate", users=None, run_s=None,
                           calibrate=calibration_path)  # fmt: skip
            _wait(proc, CALIBRATE_S + 60)
            calibration = json.loads(calibration_path.read_text())
            result["calibration_steps"] = calibration["steps"]
            result["calibration_target_met"] = calibration.get("target_met")
            chosen = calibration["chosen"] or {"users": CALIBRATION["start_users"]}
            result["calibrated_users"] = chosen["users"]
            users = max(CALIBRATION["min_users"], round(chosen["users"] * SUSTAIN_SHARE))
            log(f"calibration: {chosen['users']} people, the run holds {users} "
                f"(steps {calibration['steps']})")  # fmt: skip
        result["users"] = users
        cpu = CpuMeter({
            "web": [ctx.web_pid], "workers": ctx.worker_pids,
            "beat": [c.proc.pid for c in children if c.name == "beat"],
            "moto": [children[0].proc.pid],
        })  # fmt: skip
        cpu.start()
        cpu.mark()
        main_started = result["main_started_at"] = time.time()
        proc = _locust(launch, config_path, "main", users=users, run_s=RUN_S)
        cpu.roots["locust"] = [proc.pid]
        result.update(_drills(ctx, http, seed, main_started))
        _wait(proc, RUN_S + 60)
        result["cpu_s"] = cpu.seconds()
        result["main_ended_at"] = time.time()
        result["main_wall_s"] = round(time.time() - main_started, 1)
        cpu.stop.set()
        result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        _stop_locusts()  # before the launch stops the portal: no locust hammering a closed port
        load.stop.set()
        load.join(timeout=5)
    result.update(_pages(read_samples(VAR / "main-samples.csv"), result))
    result.update(_completion(ctx, env, result))
    reports.stop.set()
    for internal in ("main_started_at", "main_ended_at", "revoke_sent_at", "reload_window"):
        result.pop(internal, None)
    return result


def _cost_plan(seed: dict, http: dict, bench_token: str) -> dict:
    """The page groups of the locustfile, one fixed set of pages each, for ``page_costs``."""
    acme = seed["byok_orgs"][0]
    admin, rep, support = (
        http["admin@acme.example"],
        http[seed["reps"][0]["email"]],
        http[seed["supports"][0]["email"]],
    )
    org = f"/orgs/{acme['id']}"
    reads = [f"/__bench__/read/{a}/{r[0]}" for o in seed["byok_orgs"] for a, r in o["apps"].items()]
    return {
        "dashboard": (admin, ["/", f"{org}/"]),
        "byok": (admin, [f"{org}/byok/"]),
        "audit": (admin, [f"{org}/audit/", f"{org}/audit/?event_name=Decrypt",
                          f"{org}/audit/?errors_only=on", f"{org}/audit/?region=us-west-2"]),
        "audit_csv": (admin, [f"{org}/audit/?event_name=GenerateDataKey&format=csv"]),
        "staff_queue": (rep, ["/staff/requests/"]),
        "staff_request": (rep, [f"/staff/requests/{r}/" for r in seed["requests"]]),
        "admin": (support, ["/admin/audit/auditevent/", "/admin/orgs/organization/",
                            "/admin/orgs/appinstance/", "/admin/setup/setuprequest/"]),
        "app_read": ({"X-Bench-Token": bench_token}, reads),
    }  # fmt: skip


def _drills(ctx, http, seed, main_started) -> dict:
    out: dict = {}
    revoker = http[seed["revoker"]["email"]]
    acme_admin = http["admin@acme.example"]
    cookie = "; ".join(f"{k}={v}" for k, v in acme_admin.cookies.get_dict().items())
    org = seed["revoked_org"]
    steps = [
        (REVOKE_AT_S, "revoke", lambda: revoke_drill(ctx, lambda: revoke(
            ctx.url, revoker, org_id=org["id"], org_name=org["name"], password=seed["password"]
        ))),
        (KILL_AT_S, "kill", lambda: kill_drill(ctx)),
        (RELOAD_AT_S, "reload", lambda: reload_drill(ctx, cookie=cookie)),
    ]  # fmt: skip
    for at_s, name, drill in steps:
        delay = main_started + at_s - time.time()
        if delay > 0:
            time.sleep(delay)
        log(f"{name} drill at {time.time() - main_started:.0f} s")
        try:
            out.update(drill())
        except Exception as exc:  # the run goes on; the figure says what broke
            out[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _pages(samples, result: dict) -> dict:
    """Page-group figures of the main run (drills included), and the same without the
    reload's window (``steady``); the failures inside the reload's window."""
    groups, total = group_figures(samples)
    worst_group, worst = worst_p95(groups)
    out = {
        "page_groups": groups,
        "p95_ms_worst": worst,
        "p95_worst_group": worst_group,
        "requests": total.get("requests"),
        "requests_per_s": total.get("rps"),
        "errors": total.get("failures"),
    }
    window = result.get("reload_window")
    if window:
        steady, _ = group_figures(samples, exclude=(window[0], window[1]))
        out["p95_ms_steady"] = {name: figures["p95_ms"] for name, figures in steady.items()}
        out["p95_ms_worst_steady"] = worst_p95(steady)[1]
        failed = failures_between(samples, window[0], window[1])
        out["errors_during_reload"] = failed + result.get("reload_probe_failures", 0)
    return out


def _completion(ctx, env, result) -> dict:
    """Wait for the workers to finish every task of the run, then count what was lost."""
    tokens = ctx.tasks.tokens
    reported = [k for k in tokens if k != "read_check"]
    expected = {t for kind in reported for t in tokens[kind]}
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        done = {t.decode() for t in ctx.redis.smembers(DONE)}
        if expected <= done and not ctx.redis.llen("celery"):
            break
        time.sleep(0.5)
    done = {t.decode() for t in ctx.redis.smembers(DONE)}
    spec = {
        "read_check_tokens": tokens.get("read_check", []),
        "slow_token": result.get("kill_token"),
        "revoked_org": ctx.seed["revoked_org"]["id"],
        "window": [result["main_started_at"], result["main_ended_at"]],
    }
    spec_path = VAR / "checks.json"
    spec_path.write_text(json.dumps(spec))
    answer = subprocess.run(
        [sys.executable, "-m", "bench._load_checks", str(spec_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    checks = json.loads(answer.stdout.strip().splitlines()[-1])
    slow_missing = max(0, result.get("kill_expected_checks", 0) - checks["slow_task_events"])
    reports = list(ctx.reports.items)
    workers = {
        "tasks": len(reports),
        "reads": sum(r["reads"] for r in reports),
        "writes": sum(r["writes"] for r in reports),
        "refused_revoked_org": sum(r["refused"] - r["refused_unwatched"] for r in reports),
        "refused_other_orgs": sum(r["refused_unwatched"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
        "flickers": sum(
            1
            for r in reports
            for first, _last, ok in r["watch"].values()
            if first is not None and ok is not None and ok > first
        ),
        "first_error": next((r["error"] for r in reports if r["error"]), ""),
    }
    main_reports = [r for r in reports if r["finished"] <= result["main_ended_at"]]
    worker_cpu = result.get("cpu_s", {}).get("workers")
    if worker_cpu:  # the main run's only (reports also cover the drain)
        ops = sum(r["reads"] + r["writes"] + r["refused"] for r in main_reports)
        workers["cpu_ms_per_op"] = round(worker_cpu * 1000 / max(1, ops), 2)
        workers["ops_per_s"] = round(ops / max(1.0, result["main_wall_s"]), 1)
    # Every AWS call with a customer's role during the main run (cache misses, the health
    # monitor, the fresh web workers after the reload) per 1,000 data-plane reads and writes.
    data_ops = sum(r["reads"] + r["writes"] for r in main_reports)
    data_ops += result["page_groups"].get("app_read", {}).get("requests", 0)
    kms_per_1k = round(sum(checks["kms_calls"].values()) * 1000 / max(1, data_ops), 2)
    revoked_at = checks.pop("revoked_at")
    out = {
        "tasks_enqueued": {kind: len(values) for kind, values in tokens.items()},
        "lost_tasks": len(expected - done) + checks["read_checks_missing"],
        "lost_audit_events": checks["chain_gaps"] + checks["read_checks_missing"] + slow_missing,
        "audit": checks,
        "dataplane_workers": workers,
        "kms_calls_per_1k_data_ops": kms_per_1k,
    }
    if revoked_at and result.get("revoke_all_processes_s") is not None:
        sent = result["revoke_sent_at"]
        out["revoke_post_ms"] = round((revoked_at - sent) * 1000, 1)
        out["revoke_after_commit_s"] = round(
            result["revoke_all_processes_s"] - (revoked_at - sent), 3
        )
    return out
