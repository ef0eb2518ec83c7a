"""``make run``: the portal on the embedded default, with a local moto server as "AWS".

Order: start moto_server → migrate → wait for moto → seed_demo (orgs, users, Acme's keys and
records, replacement keys, a CloudTrail bucket imported into Acme's audit log) → sign a first
audit digest of every chain (so the demo export verifies) → Celery worker (with embedded
beat; in the demo it signs digests every AUDIT_DIGEST_INTERVAL_S, 5 minutes) → runserver.
Ctrl-C (SIGINT) or SIGTERM stops every child; so does any child exiting on its own. Children
run in their own process groups, so a terminal's Ctrl-C reaches only this supervisor, which
then shuts them down: web and worker (warm shutdown), then moto.

Environment: PORT (8000), MOTO_PORT (5000), HOST (127.0.0.1), RELOAD (1: runserver reloads on
code changes; the worker does not); anything else is passed through.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8000"))
MOTO_PORT = int(os.environ.get("MOTO_PORT", "5000"))
MOTO_URL = f"http://127.0.0.1:{MOTO_PORT}"
STOP_TIMEOUT_S = 15.0

sys.path.insert(0, str(ROOT))
from demo.users import DEMO_PASSWORD, DEMO_USERS  # noqa: E402  (Django-free)


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


def log(message: str) -> None:
    print(f"[run] {message}", flush=True)


def _set_pdeathsig() -> None:
    """Linux: the child gets SIGTERM if this supervisor dies without cleaning up."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class Child:
    """One supervised process, in its own session; output prefixed, or to a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], logfile: Path | None):
        self.name = name
        self._logfile = logfile.open("ab") if logfile else None
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._logfile or subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_set_pdeathsig,
        )
        if self._logfile is None:
            threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        prefix = f"[{self.name}] ".encode()
        for line in iter(self.proc.stdout.readline, b""):
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.buffer.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM to the child itself (Celery: warm shutdown; runserver: its reloader too)."""
        if self.alive():
            self.proc.terminate()

    def stop(self) -> None:
        """Terminate, wait up to STOP_TIMEOUT_S, then SIGKILL whatever is left of its group."""
        self.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop in {STOP_TIMEOUT_S:g} s: killing it")
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: stragglers, orphans
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        if self._logfile:
            self._logfile.close()


class Stop(Exception):
    pass


def _on_signal(signum, _frame) -> None:
    raise Stop(signal.Signals(signum).name)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            response.read()
        return True
    except urllib.error.HTTPError:
        return True  # it answered, with an error status: it is up
    except OSError:
        return False


def wait_until(what: str, check, child: Child | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if child is not None and not child.alive():
            raise SystemExit(f"[run] {child.name} exited ({child.proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"[run] gave up waiting for {what} after {timeout:g} s")
        time.sleep(0.2)


def manage(env: dict[str, str], *args: str) -> None:
    log("manage.py " + " ".join(args))
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"[run] manage.py {' '.join(args)} failed ({result.returncode})")


def print_logins() -> None:
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
        print_logins()

        while True:
            for child in children:
                if not child.alive():
                    log(f"{child.name} exited ({child.proc.returncode}): stopping the rest")
                    status = 1
                    raise Stop(child.name)
            time.sleep(0.5)
    except Stop:
        pass
    except SystemExit as exc:
        print(exc, file=sys.stderr, flush=True)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Web and worker together (the worker's warm shutdown takes a few seconds), moto last.
        for child in children[1:]:
            child.terminate()
        for child in reversed(children):
            child.stop()
        if children:
            log("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
