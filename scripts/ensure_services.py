"""Make sure the services lane's PostgreSQL and Redis answer; start them if they don't.

Usage: python scripts/ensure_services.py  (reads DATABASE_URL and CELERY_BROKER_URL)

Exits 0 when both answer, else 1 naming what is still down. Start commands are the ones this
machine kind uses (Debian packages); override with PG_START_CMD / REDIS_START_CMD.
"""

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/byokportal"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/5"
WAIT_S = 30.0


def _pg_start_cmd() -> str:
    etc = Path("/etc/postgresql")
    versions = sorted(p.name for p in etc.iterdir()) if etc.is_dir() else []
    version = versions[-1] if versions else "15"
    return f"pg_ctlcluster --skip-systemctl-redirect {version} main start"


REDIS_START_CMD = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def postgres_ok(url: str) -> str | None:
    """None when a query works, else the reason."""
    parts = urlsplit(url)
    try:
        import psycopg
    except ImportError:  # fall back to a TCP check
        return _tcp(parts.hostname or "127.0.0.1", parts.port or 5432)
    try:
        with psycopg.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password or None,
            dbname="postgres",
            connect_timeout=3,
        ) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means "not usable"
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def redis_ok(url: str) -> str | None:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=3
        ) as sock:
            if parts.password:
                sock.sendall(f"AUTH {parts.password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        return str(exc)
    return None if reply.startswith(b"+PONG") else f"unexpected reply {reply!r}"


def _tcp(host: str, port: int) -> str | None:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return str(exc)
    return None


def _start(name: str, command: str) -> None:
    print(f"ensure_services: {name} is down, starting it: {command}", flush=True)
    try:
        result = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"ensure_services: could not run it: {exc}", file=sys.stderr)
        return
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        print(f"ensure_services: exit {result.returncode}: {output}", file=sys.stderr)


def main() -> int:
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    broker_url = os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    services = [
        (
            "PostgreSQL",
            database_url,
            postgres_ok,
            os.environ.get("PG_START_CMD") or _pg_start_cmd(),
        ),
        ("Redis", broker_url, redis_ok, os.environ.get("REDIS_START_CMD") or REDIS_START_CMD),
    ]
    down = []
    for name, url, check, start_cmd in services:
        if check(url) is None:
            print(f"ensure_services: {name} is up ({_where(url)})")
            continue
        _start(name, start_cmd)
        deadline = time.monotonic() + WAIT_S
        while (problem := check(url)) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        if problem is None:
            print(f"ensure_services: {name} is up ({_where(url)})")
        else:
            down.append(f"{name} at {_where(url)}: {problem}")
    if down:
        print("ensure_services: still down:\n  " + "\n  ".join(down), file=sys.stderr)
        return 1
    return 0


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


if __name__ == "__main__":
    sys.exit(main())
