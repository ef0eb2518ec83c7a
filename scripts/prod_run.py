"""``make prod-run``: the portal as production runs it, on this machine.

gunicorn (``WEB_CONCURRENCY`` workers, 4), ``CELERY_WORKERS`` Celery worker instances (1, each
``CELERY_CONCURRENCY`` processes, 2; acks late, prefetch 1) and one beat, each started from the
Procfile by ``scripts/proc.py`` — the same command the systemd units in ``deploy/systemd`` run
— on PostgreSQL and Redis (started if they are down, as the services lane does), with DEBUG
off. The customer's AWS is a local moto server. Plain HTTP on 127.0.0.1 only
(``PLAIN_HTTP_LOCALHOST``: cookies without the Secure flag, no HTTPS redirect).

Order: PostgreSQL and Redis up → the database created if missing → moto → migrate,
collectstatic → demo data (``seed_demo``, with the demo app enabled for that command only) →
beat, workers, web → ``/healthz`` answers. Ctrl-C stops everything (gunicorn and the workers
shut down gracefully).

Environment: PORT (8000), MOTO_PORT (5000), DATABASE_URL
(postgres://postgres@127.0.0.1:5432/byokportal_prod), CELERY_BROKER_URL
(redis://127.0.0.1:6379/7), WEB_CONCURRENCY, GUNICORN_THREADS, CELERY_WORKERS,
CELERY_CONCURRENCY, SEED (1: seed the demo data), METRICS_TOKEN (generated and printed when
unset). ``--check`` starts everything, checks that a page and /metrics answer, and stops.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts import supervise  # noqa: E402
from scripts.ensure_services import main as ensure_services  # noqa: E402
from scripts.supervise import Child, Stop, http_answers, log, manage, wait_until  # noqa: E402

supervise.TAG = "prod"
PORT = int(os.environ.get("PORT", "8000"))
MOTO_PORT = int(os.environ.get("MOTO_PORT", "5000"))
MOTO_URL = f"http://127.0.0.1:{MOTO_PORT}"
VAR = ROOT / "var" / "prod"


def _secret(name: str, make) -> str:
    """A value kept in var/prod (git-ignored) so restarts keep sessions and signatures."""
    path = VAR / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def production_env() -> dict[str, str]:
    VAR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("AWS_PROFILE", None)
    env.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/byokportal_prod")
    env.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/7")
    env.setdefault("METRICS_TOKEN", _secret("metrics-token", lambda: secrets.token_urlsafe(32)))
    env.update(
        DJANGO_SETTINGS_MODULE="byokportal.settings",
        DEBUG="0",
        DEMO_ENABLED="0",
        PLAIN_HTTP_LOCALHOST="1",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        PORTAL_BASE_URL=f"http://127.0.0.1:{PORT}",
        PORT=str(PORT),
        BYOK_VAR_DIR=str(VAR),
        SECRET_KEY=_secret("secret-key", lambda: secrets.token_urlsafe(64)),
        AUDIT_SIGNING_KEY=_secret(
            "audit-signing-key", lambda: base64.b64encode(os.urandom(32)).decode()
        ),
        PROMETHEUS_MULTIPROC_DIR=str(VAR / "metrics"),
        AWS_ENDPOINT_URL=MOTO_URL,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SECURITY_TOKEN="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONUNBUFFERED="1",
    )
    return env


def create_database(url: str) -> None:
    """PostgreSQL: the database of ``url``, created when missing (migrate cannot)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    connect = dict(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
    )
    with psycopg.connect(dbname="postgres", autocommit=True, **connect) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            log(f"creating database {name}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def start_processes(env: dict[str, str], children: list[Child]) -> None:
    """Beat, the workers and the web, each from the Procfile (scripts/proc.py)."""
    proc = [sys.executable, str(ROOT / "scripts" / "proc.py")]
    children.append(Child("beat", [*proc, "beat"], env, None))
    for index in range(1, int(env.get("CELERY_WORKERS", "1")) + 1):
        worker_env = {**env, "CELERY_WORKER_INDEX": str(index)}
        children.append(Child(f"worker-{index}", [*proc, "worker"], worker_env, None))
    children.append(Child("web", [*proc, "web"], env, None))


def check_metrics(env: dict[str, str]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/metrics",
        headers={"Authorization": f"Bearer {env['METRICS_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # nosec B310 - loopback
        body = response.read().decode()
    if "byok_" not in body:
        raise SystemExit("[prod] /metrics answered without the portal's metrics")
    log(f"/metrics answers ({len(body.splitlines())} lines)")


def main(argv: list[str]) -> int:
    check_only = "--check" in argv
    env = production_env()
    if ensure_services() != 0:  # reads DATABASE_URL and CELERY_BROKER_URL of this process
        return 1
    create_database(env["DATABASE_URL"])
    for port, what in ((PORT, "the portal"), (MOTO_PORT, "moto")):
        if supervise.port_in_use(port):
            log(f"port {port} (for {what}) is already in use")
            return 1
    children: list[Child] = []
    signal.signal(signal.SIGINT, supervise._on_signal)
    signal.signal(signal.SIGTERM, supervise._on_signal)
    status = 0
    try:
        moto_cmd = [str(Path(sys.executable).parent / "moto_server"), "-p", str(MOTO_PORT)]
        moto = Child("moto", [*moto_cmd, "-H", "127.0.0.1"], env, VAR / "moto.log")
        children.append(moto)
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput", "--verbosity", "0")
        wait_until("moto to answer", lambda: http_answers(f"{MOTO_URL}/moto-api/"), moto, 60)
        if env.get("SEED", "1") == "1":
            # The demo data (simulated customer AWS, users with the published demo password):
            # seed_demo runs in development mode only, so this one command does. The portal's
            # processes run with DEBUG off and without the demo app, on loopback only.
            manage({**env, "DEBUG": "1", "DEMO_ENABLED": "1"}, "seed_demo")
        start_processes(env, children)
        health = f"http://127.0.0.1:{PORT}/healthz"
        wait_until("the portal to answer", lambda: http_answers(health), children[-1], 60)
        log(f"BYOK Portal (production settings) is up: http://127.0.0.1:{PORT}/")
        log(f"metrics: curl -H 'Authorization: Bearer {env['METRICS_TOKEN']}' {health[:-7]}metrics")
        if check_only:
            check_metrics(env)
            return 0
        status = supervise.watch(children)
    except Stop:
        pass
    except (SystemExit, subprocess.SubprocessError, OSError) as exc:
        print(exc, file=sys.stderr, flush=True)
        status = 1
    finally:
        supervise.stop_all(children)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
