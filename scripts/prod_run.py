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

The steps are importable (``python -m bench load`` runs the same launch on its own ports,
database and Redis db): :class:`Launch` says where a launch runs, :func:`launched` runs the
whole sequence and always stops what it started.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts import supervise  # noqa: E402
from scripts.ensure_services import main as ensure_services  # noqa: E402
from scripts.supervise import Child, Stop, http_answers, log, manage, wait_until  # noqa: E402


@dataclass(frozen=True)
class Launch:
    """Where one launch runs: its ports, state directory (secrets, beat schedule, logs),
    database and broker; ``logs``: each child's output to ``<logs>/<name>.log`` instead of
    this terminal (prefixed with its name)."""

    port: int = 8000
    moto_port: int = 5000
    var: Path = ROOT / "var" / "prod"
    database_url: str = "postgres://postgres@127.0.0.1:5432/byokportal_prod"
    broker_url: str = "redis://127.0.0.1:6379/7"
    logs: Path | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> Launch:
        environ = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            port=int(environ.get("PORT", defaults.port)),
            moto_port=int(environ.get("MOTO_PORT", defaults.moto_port)),
            database_url=environ.get("DATABASE_URL", defaults.database_url),
            broker_url=environ.get("CELERY_BROKER_URL", defaults.broker_url),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def moto_url(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def logfile(self, name: str) -> Path | None:
        return None if self.logs is None else self.logs / f"{name}.log"


def _secret(var: Path, name: str, make) -> str:
    """A value kept in the launch's var dir (git-ignored) so restarts keep sessions and
    signatures."""
    path = var / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def production_env(launch: Launch, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of the launch: ``base`` (this process's environment)
    with production settings, the launch's ports, database and broker, moto as AWS."""
    launch.var.mkdir(parents=True, exist_ok=True)
    if launch.logs is not None:
        launch.logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if base is None else base)
    env.pop("AWS_PROFILE", None)
    env.setdefault(
        "METRICS_TOKEN", _secret(launch.var, "metrics-token", lambda: secrets.token_urlsafe(32))
    )
    # The API's per-token rate limits count in the cache: one Redis for every process.
    env.setdefault("CACHE_URL", launch.broker_url)
    env.update(
        DATABASE_URL=launch.database_url,
        CELERY_BROKER_URL=launch.broker_url,
        DJANGO_SETTINGS_MODULE="byokportal.settings",
        DEBUG="0",
        DEMO_ENABLED="0",
        PLAIN_HTTP_LOCALHOST="1",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        PORTAL_BASE_URL=launch.url,
        PORT=str(launch.port),
        BYOK_VAR_DIR=str(launch.var),
        SECRET_KEY=_secret(launch.var, "secret-key", lambda: secrets.token_urlsafe(64)),
        AUDIT_SIGNING_KEY=_secret(
            launch.var, "audit-signing-key", lambda: base64.b64encode(os.urandom(32)).decode()
        ),
        PROMETHEUS_MULTIPROC_DIR=str(launch.var / "metrics"),
        AWS_ENDPOINT_URL=launch.moto_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SECURITY_TOKEN="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _admin_connection(url: str):
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(
        dbname="postgres",
        autocommit=True,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
    )


def create_database(url: str, *, fresh: bool = False) -> None:
    """PostgreSQL: the database of ``url``, created when missing (migrate cannot); ``fresh``
    drops it first (its sessions ended)."""
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    with _admin_connection(url) as conn:
        if fresh:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            log(f"creating database {name}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def ensure_backing_services(env: dict[str, str]) -> None:
    """PostgreSQL and Redis of ``env`` answer (started if they are down)."""
    saved = {name: os.environ.get(name) for name in ("DATABASE_URL", "CELERY_BROKER_URL")}
    os.environ.update(DATABASE_URL=env["DATABASE_URL"], CELERY_BROKER_URL=env["CELERY_BROKER_URL"])
    try:
        if ensure_services() != 0:
            raise SystemExit(f"[{supervise.TAG}] PostgreSQL or Redis is not available")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_ports_free(launch: Launch) -> None:
    for port, what in ((launch.port, "the portal"), (launch.moto_port, "moto")):
        if supervise.port_in_use(port):
            raise SystemExit(f"[{supervise.TAG}] port {port} (for {what}) is already in use")


def start_moto(launch: Launch, env: dict[str, str], children: list[Child]) -> Child:
    """The customer's AWS: a moto server on the launch's port (its log in the var dir)."""
    command = [str(Path(sys.executable).parent / "moto_server"), "-p", str(launch.moto_port)]
    logfile = launch.logfile("moto") or launch.var / "moto.log"
    moto = Child("moto", [*command, "-H", "127.0.0.1"], env, logfile)
    children.append(moto)
    return moto


def prepare_database(env: dict[str, str]) -> None:
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput", "--verbosity", "0")


def seed_demo(env: dict[str, str]) -> None:
    # The demo data (simulated customer AWS, users with the published demo password):
    # seed_demo runs in development mode only, so this one command does. The portal's
    # processes run with DEBUG off and without the demo app, on loopback only.
    manage({**env, "DEBUG": "1", "DEMO_ENABLED": "1"}, "seed_demo")


def start_processes(launch: Launch, env: dict[str, str], children: list[Child]) -> Child:
    """Beat, the workers and the web, each from the Procfile (scripts/proc.py); returns the
    web's child (gunicorn's master: ``proc.py`` execs it, so the pid is the master's).

    The Prometheus directory they share is emptied first, while none of them runs: no figures
    of a previous run, and no process writing into files another one deleted."""
    metrics_dir = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    proc = [sys.executable, str(ROOT / "scripts" / "proc.py")]
    children.append(Child("beat", [*proc, "beat"], env, launch.logfile("beat")))
    for index in range(1, int(env.get("CELERY_WORKERS", "1")) + 1):
        worker_env = {**env, "CELERY_WORKER_INDEX": str(index)}
        name = f"worker-{index}"
        children.append(Child(name, [*proc, "worker"], worker_env, launch.logfile(name)))
    web = Child("web", [*proc, "web"], env, launch.logfile("web"))
    children.append(web)
    return web


@contextmanager
def launched(
    launch: Launch,
    env: dict[str, str],
    *,
    fresh_database: bool = False,
    seed: bool = True,
    after_seed: Callable[[dict[str, str]], None] | None = None,
) -> Iterator[list[Child]]:
    """The whole launch: services up, database, moto, migrate, demo data (``after_seed`` runs
    next, with moto up and the processes not yet started), beat, workers, web, ``/healthz``
    answering. Yields the children (moto first, web last); stops them all on leaving, however
    it is left."""
    ensure_backing_services(env)
    create_database(env["DATABASE_URL"], fresh=fresh_database)
    check_ports_free(launch)
    children: list[Child] = []
    try:
        moto = start_moto(launch, env, children)
        prepare_database(env)
        moto_up = lambda: http_answers(f"{launch.moto_url}/moto-api/")  # noqa: E731
        wait_until("moto to answer", moto_up, moto, 60)
        if seed:
            seed_demo(env)
        if after_seed is not None:
            after_seed(env)
        web = start_processes(launch, env, children)
        health = f"{launch.url}/healthz"
        wait_until("the portal to answer", lambda: http_answers(health), web, 60)
        yield children
    finally:
        supervise.stop_all(children)


def check_metrics(launch: Launch, env: dict[str, str]) -> None:
    request = urllib.request.Request(
        f"{launch.url}/metrics",
        headers={"Authorization": f"Bearer {env['METRICS_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # nosec B310 - loopback
        body = response.read().decode()
    if "byok_" not in body:
        raise SystemExit("[prod] /metrics answered without the portal's metrics")
    log(f"/metrics answers ({len(body.splitlines())} lines)")


def main(argv: list[str]) -> int:
    supervise.TAG = "prod"
    check_only = "--check" in argv
    launch = Launch.from_environ()
    env = production_env(launch)
    signal.signal(signal.SIGINT, supervise._on_signal)
    signal.signal(signal.SIGTERM, supervise._on_signal)
    try:
        with launched(launch, env, seed=env.get("SEED", "1") == "1") as children:
            log(f"BYOK Portal (production settings) is up: {launch.url}/")
            token = env["METRICS_TOKEN"]
            log(f"metrics: curl -H 'Authorization: Bearer {token}' {launch.url}/metrics")
            if check_only:
                check_metrics(launch, env)
                return 0
            return supervise.watch(children)
    except Stop:
        return 0
    except (SystemExit, subprocess.SubprocessError, OSError) as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
