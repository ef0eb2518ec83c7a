"""``make run``: the portal on the embedded default, with a local moto server as "AWS".

Order: start moto_server → migrate → wait for moto → seed_demo (orgs, users, Acme's keys and
records, replacement keys, a CloudTrail bucket imported into Acme's audit log) → sign a first
audit digest of every chain (so the demo export verifies) → Celery worker (with embedded
beat; in the demo it signs digests every AUDIT_DIGEST_INTERVAL_S, 5 minutes) → runserver.
It prints the demo logins, and a read-only API token of Acme's admin with a ``curl`` that lists
the audit events (``demo_api_token``, DEBUG only).
Ctrl-C (SIGINT) or SIGTERM stops every child; so does any child exiting on its own. Children
run in their own process groups, so a terminal's Ctrl-C reaches only this supervisor, which
then shuts them down: web and worker (warm shutdown), then moto.

Environment: PORT (8000), MOTO_PORT (5000), HOST (127.0.0.1), RELOAD (1: runserver reloads on
code changes; the worker does not); anything else is passed through.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8000"))
MOTO_PORT = int(os.environ.get("MOTO_PORT", "5000"))
MOTO_URL = f"http://127.0.0.1:{MOTO_PORT}"

sys.path.insert(0, str(ROOT))
from demo.users import DEMO_PASSWORD, DEMO_USERS  # noqa: E402  (Django-free)
from scripts.supervise import (  # noqa: E402
    Child,
    Stop,
    _on_signal,
    http_answers,
    log,
    manage,
    port_in_use,
    stop_all,
    wait_until,
    watch,
)


def demo_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DEBUG="1",
        DJANGO_SETTINGS_MODULE="byokportal.settings",
        AWS_ENDPOINT_URL=MOTO_URL,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SECURITY_TOKEN="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONUNBUFFERED="1",
    )
    # Sign-ins and clicks add events after the first digest: sign them within minutes, not the
    # production hour, so a demo export stops saying "not yet signed" soon.
    env.setdefault("AUDIT_DIGEST_INTERVAL_S", "300")
    env.pop("AWS_PROFILE", None)
    return env


def demo_api_token(env: dict[str, str]) -> dict | None:
    """A read-only token of Acme's admin (``demo_api_token``), or None if that failed."""
    result = subprocess.run(
        [sys.executable, "manage.py", "demo_api_token"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        log(f"demo_api_token failed: {result.stderr.strip()[-300:]}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def api_lines(api: dict | None) -> list[str]:
    base = f"http://{HOST}:{PORT}"
    lines = [
        f"REST API: {base}/api/v1/docs/ (OpenAPI schema: {base}/api/v1/schema/).",
        f"  Create a token as admin@acme.example on {base}/orgs/<id>/api-tokens/ (the org's",
        "  page links it; scopes read, audit:read, keys:revoke, setup:write; shown once).",
    ]
    if api:
        lines += [
            "  A read-only demo token of Acme's admin (expires in a day):",
            f"  curl -H 'Authorization: Bearer {api['token']}' \\",
            f"       '{base}/api/v1/orgs/{api['org_id']}/audit/events?limit=5'",
        ]
    return lines


def print_logins(api: dict | None = None) -> None:
    width = max(len(u.email) for u in DEMO_USERS)
    lines = [
        "",
        f"BYOK Portal (demo) is up: http://{HOST}:{PORT}/   — Ctrl-C stops everything",
        f"Demo logins, password for all: {DEMO_PASSWORD}",
        *(f"  {u.email:<{width}}  {u.description}" for u in DEMO_USERS),
        f"AWS (moto server): {MOTO_URL}   moto's log: var/log/moto.log",
        "Acme (admin@acme.example) shows everything: BYOK keys and encrypted records, the",
        "  replacement keys deployed (a re-encryption's preflight passes) and its own CloudTrail",
        "  imported into the audit log (a day of log files in a trail bucket in moto).",
        *api_lines(api),
        "",
    ]
    print("\n".join(lines), flush=True)


def main() -> int:
    env = demo_env()
    logs = ROOT / "var" / "log"
    logs.mkdir(parents=True, exist_ok=True)
    for port, what, var in ((PORT, "the portal", "PORT"), (MOTO_PORT, "moto", "MOTO_PORT")):
        if port_in_use(port):
            log(f"port {port} (for {what}) is already in use: stop that process or set {var}=…")
            return 1

    children: list[Child] = []
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    status = 0
    try:
        moto_cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(MOTO_PORT)]
        moto = Child("moto", moto_cmd, env, logs / "moto.log")
        children.append(moto)
        manage(env, "migrate", "--noinput")
        wait_until("moto to answer", lambda: http_answers(f"{MOTO_URL}/moto-api/"), moto, 60)
        log(f"moto server answers at {MOTO_URL}")
        manage(env, "seed_demo")
        # A first signed digest of everything seeded, so the demo export verifies right away.
        manage(
            env,
            "shell",
            "-v",
            "0",
            "-c",
            "from demo.seed import sign_first_digests as s; print(s())",
        )

        api = demo_api_token(env)

        worker_cmd = [
            sys.executable, "-m", "celery", "-A", "byokportal", "worker", "-B",
            "-l", "info", "--concurrency", "2",
        ]  # fmt: skip
        children.append(Child("worker", worker_cmd, env, None))

        web_cmd = [sys.executable, "manage.py", "runserver", f"{HOST}:{PORT}"]
        if os.environ.get("RELOAD", "1") == "0":
            web_cmd.append("--noreload")
        web = Child("web", web_cmd, env, None)
        children.append(web)
        health = f"http://{HOST}:{PORT}/healthz"
        wait_until("the portal to answer", lambda: http_answers(health), web, 60)
        print_logins(api)

        status = watch(children)
    except Stop:
        pass
    except SystemExit as exc:
        print(exc, file=sys.stderr, flush=True)
        status = 1
    finally:
        stop_all(children)
    return status


if __name__ == "__main__":
    sys.exit(main())
