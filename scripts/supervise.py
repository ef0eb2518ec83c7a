"""Process supervision shared by `make run` (scripts/run_demo.py) and `make prod-run`
(scripts/prod_run.py): children in their own sessions, output prefixed or to a log file,
stopped together (TERM, then KILL of whatever is left of each group)."""

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
STOP_TIMEOUT_S = 15.0
TAG = "run"  # the prefix of this supervisor's own lines


def log(message: str) -> None:
    print(f"[{TAG}] {message}", flush=True)


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
            raise SystemExit(f"[{TAG}] {child.name} exited ({child.proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"[{TAG}] gave up waiting for {what} after {timeout:g} s")
        time.sleep(0.2)


def manage(env: dict[str, str], *args: str) -> None:
    log("manage.py " + " ".join(args))
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"[{TAG}] manage.py {' '.join(args)} failed ({result.returncode})")


def watch(children: list[Child]) -> int:
    """Until a signal (``Stop``) or a child exits on its own (then 1: something broke)."""
    while True:
        for child in children:
            if not child.alive():
                log(f"{child.name} exited ({child.proc.returncode}): stopping the rest")
                return 1
        time.sleep(0.5)


def stop_all(children: list[Child]) -> None:
    """Everything but the first child (AWS, which the others may still call) together, then
    the first: a worker's warm shutdown and gunicorn's graceful one take a few seconds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for child in children[1:]:
        child.terminate()
    for child in reversed(children):
        child.stop()
    if children:
        log("stopped")
