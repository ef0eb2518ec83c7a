"""Runs one process of the Procfile by name: ``python scripts/proc.py web|worker|beat``.

The one place a process's command line is defined (the Procfile), used by `make prod-run`
(scripts/prod_run.py) and by the systemd units (deploy/systemd). ``${VAR:-default}`` and
``${VAR}`` are expanded from the environment; the command replaces this process (``exec``), so
signals (HUP to gunicorn, TERM for a warm shutdown) reach it directly.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def procfile(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """``{name: command}`` of the Procfile (comments and blank lines skipped)."""
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def command_of(name: str, env: dict[str, str] | None = None) -> list[str]:
    """The argument list of process ``name``, variables expanded from ``env``."""
    env = os.environ if env is None else env
    entries = procfile()
    if name not in entries:
        raise SystemExit(f"no process {name!r} in the Procfile (known: {', '.join(entries)})")
    expanded = _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), entries[name])
    argv = shlex.split(expanded)
    # gunicorn and celery are the venv's console scripts, next to this interpreter.
    executable = Path(sys.executable).parent / argv[0]
    if executable.exists():
        argv[0] = str(executable)
    return argv


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python scripts/proc.py web|worker|beat")
    command = command_of(argv[1])
    os.chdir(ROOT)
    os.execv(command[0], command)  # noqa: S606 - the Procfile's own command, no shell


if __name__ == "__main__":
    main(sys.argv)
