"""Services lane: PostgreSQL, Redis, a moto server and a REAL Celery worker process.

Run it with ``make test-services``, which checks/starts PostgreSQL and Redis and sets
``DATABASE_URL`` and ``CELERY_BROKER_URL``. Tests that need the worker request the
``celery_worker_process`` fixture and are marked ``@pytest.mark.django_db(transaction=True)``,
so what they write is committed and visible to the worker (and the worker's writes to them).
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT_S = 60.0


@pytest.fixture(scope="session", autouse=True)
def _require_services_lane() -> None:
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    broker = settings.CELERY_BROKER_URL
    problems = []
    if "postgresql" not in engine:
        problems.append(f"DATABASE_URL must point at PostgreSQL (engine is {engine})")
    if not broker.startswith("redis://"):
        problems.append(f"CELERY_BROKER_URL must be redis:// (is {broker})")
    if settings.CELERY_TASK_ALWAYS_EAGER:
        problems.append("CELERY_TASK_ALWAYS_EAGER must be off")
    if problems:
        pytest.fail(
            "services lane misconfigured, run it with `make test-services`: " + "; ".join(problems)
        )


@pytest.fixture(scope="session", autouse=True)
def _aws_endpoint(moto_server):
    """Every test of this lane talks to the session's moto server over HTTP."""
    return moto_server


def _test_database_url() -> str:
    """DATABASE_URL with the database name replaced by pytest-django's test database."""
    from django.conf import settings

    base = os.environ.get("DATABASE_URL")
    if not base:
        pytest.fail("DATABASE_URL is not set: run the lane with `make test-services`")
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"]))


class WorkerProcess:
    """A ``celery -A byokportal worker`` subprocess, started in its own process group.

    ``kill()`` SIGKILLs the whole group (pool children included), like a crashed host;
    ``stop()`` asks for a warm shutdown; ``start()`` / ``restart()`` bring it (back) up and wait
    until it answers a ping. Output goes to ``log_path``; ``log()`` returns it.
    """

    def __init__(self, env: dict[str, str], log_dir: Path, concurrency: int = 2) -> None:
        self.env = env
        self.log_dir = log_dir
        self.concurrency = concurrency
        self.proc: subprocess.Popen | None = None
        self.nodename = ""
        self.log_path = log_dir / "worker-0.log"
        self.starts = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = WORKER_START_TIMEOUT_S) -> "WorkerProcess":
        if self.is_alive():
            return self
        self.starts += 1
        self.nodename = f"itest-{uuid.uuid4().hex[:8]}@%h"
        self.log_path = self.log_dir / f"worker-{self.starts}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "byokportal", "worker",
            "-l", "info", "-P", "prefork", "--concurrency", str(self.concurrency),
            "-n", self.nodename, "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        from byokportal.celery import app

        destination = [self.nodename.replace("%h", socket.gethostname())]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_alive():
                pytest.fail(
                    f"Celery worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}"
                )
            if app.control.ping(destination=destination, timeout=0.5):
                return
            time.sleep(0.2)
        self.kill()
        pytest.fail(f"Celery worker not ready after {timeout:g} s:\n{self.log()[-4000:]}")

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once (no warm shutdown, no acks)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM): running tasks finish first; SIGKILL after ``timeout``."""
        if self.is_alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # also reaps pool processes a warm shutdown left behind

    def restart(self, *, kill: bool = False) -> "WorkerProcess":
        self.kill() if kill else self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _purge_broker() -> None:
    """Drop messages a previous (aborted) run left in the broker."""
    from byokportal.celery import app

    with app.connection_for_write() as connection:
        app.control.purge(connection=connection)


@pytest.fixture(scope="session")
def _celery_worker_session(django_db_setup, moto_server, tmp_path_factory):
    env = dict(os.environ)
    env.update(
        DATABASE_URL=_test_database_url(),
        AWS_ENDPOINT_URL=moto_server.url,
        CELERY_TASK_ALWAYS_EAGER="0",
        PYTHONUNBUFFERED="1",
    )
    _purge_broker()
    worker = WorkerProcess(env, tmp_path_factory.mktemp("celery-worker"))
    worker.start()
    yield worker
    # Stopped before pytest-django drops the test database (this fixture depends on it).
    worker.stop(timeout=10)


@pytest.fixture
def celery_worker_process(_celery_worker_session) -> WorkerProcess:
    """The session's real Celery worker, (re)started if an earlier test killed it.

    Use with ``@pytest.mark.django_db(transaction=True)``. ``.kill()`` / ``.stop()`` /
    ``.start()`` / ``.restart(kill=True)`` control it; ``.log()`` returns its output.
    """
    return _celery_worker_session.start()
