"""Pure figure-making of ``bench load``: page-group figures from locust's per-request samples,
the failures inside a time window, and the kill switch's latency from what each process
answered. Unit-tested in ``tests/bench/test_load_helpers.py``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple


class Sample(NamedTuple):
    start: float  # Unix time the request was sent
    group: str
    ms: float
    ok: bool


def read_samples(path: Path) -> list[Sample]:
    """The lines ``start,group,ms,ok`` the locustfile writes (one per request)."""
    samples = []
    for line in path.read_text().splitlines():
        parts = line.split(",")
        if len(parts) == 4:
            samples.append(Sample(float(parts[0]), parts[1], float(parts[2]), parts[3] == "1"))
    return samples


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least ``fraction`` of the values
    at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def group_figures(
    samples: Iterable[Sample], *, exclude: tuple[float, float] | None = None
) -> tuple[dict[str, dict], dict]:
    """``({group: figures}, all groups' figures)``: requests, failures, rate, p50/p95/p99 and
    max in ms; ``exclude``: leave out requests sent inside this ``(start, end)`` window."""
    kept = [s for s in samples if exclude is None or not exclude[0] <= s.start <= exclude[1]]
    if not kept:
        return {}, {}
    span = max(1e-9, max(s.start for s in kept) - min(s.start for s in kept))

    def figures(group: list[Sample]) -> dict:
        times = [s.ms for s in group]
        return {
            "requests": len(group),
            "failures": sum(not s.ok for s in group),
            "rps": round(len(group) / span, 2),
            "p50_ms": round(percentile(times, 0.50), 1),
            "p95_ms": round(percentile(times, 0.95), 1),
            "p99_ms": round(percentile(times, 0.99), 1),
            "max_ms": round(max(times), 1),
        }

    names = sorted({s.group for s in kept})
    groups = {name: figures([s for s in kept if s.group == name]) for name in names}
    return groups, figures(kept)


def failures_between(samples: Iterable[Sample], start: float, end: float) -> int:
    """Failed requests sent between ``start`` and ``end``, or still in flight at ``start``."""
    return sum(1 for s in samples if not s.ok and s.start <= end and s.start + s.ms / 1000 >= start)


def worst_p95(groups: dict[str, dict]) -> tuple[str | None, float | None]:
    """The slowest group by p95, and that p95."""
    rated = [(figures["p95_ms"], name) for name, figures in groups.items()]
    if not rated:
        return None, None
    p95, name = max(rated)
    return name, p95


def refusal_latency(
    observations: Iterable[tuple[int, int, float, bool]], *, pids: Iterable[int], since: float
) -> dict:
    """When each process stopped reading the revoked organization's data.

    ``observations``: ``(pid, app id, server time, readable)`` of reads of that organization's
    apps; ``pids``: every process that must refuse; ``since``: when the revoke was sent. A
    process has refused once it answered a refusal after its last successful read of any of
    the org's apps; its latency is that refusal's time minus ``since``.

    Returns ``latency_s`` (the slowest process; ``None`` while one has not refused),
    ``per_pid``, ``never_refused``, ``flickers`` (an app read successfully by a process after
    that same process refused that same app: the kill switch must never do that) and
    ``other_app_reads`` (successful reads of one app after the process refused another app
    of the org, within the access guard's per-app memo).
    """
    ordered = sorted((o for o in observations if o[2] >= since), key=lambda o: o[2])
    last_ok: dict[int, float] = {}
    refused_apps: dict[int, set[int]] = {}
    flickers = other_app_reads = 0
    for pid, app, moment, readable in ordered:
        if readable:
            last_ok[pid] = moment
            if app in refused_apps.get(pid, ()):
                flickers += 1
            elif refused_apps.get(pid):
                other_app_reads += 1
        else:
            refused_apps.setdefault(pid, set()).add(app)
    refused_at: dict[int, float] = {}
    for pid, _app, moment, readable in ordered:
        if not readable and pid not in refused_at and moment >= last_ok.get(pid, since):
            refused_at[pid] = moment
    wanted = sorted(set(pids))
    per_pid = {pid: round(refused_at[pid] - since, 3) for pid in wanted if pid in refused_at}
    never = [pid for pid in wanted if pid not in refused_at]
    return {
        "latency_s": None if never or not per_pid else max(per_pid.values()),
        "per_pid": per_pid,
        # The last successful read of the org's data after ``since``, per process: a late
        # refusal with an early last read is a process that got no probe for a while (busy);
        # a late last read would be the kill switch failing.
        "last_read_s": {pid: round(last_ok[pid] - since, 3) for pid in wanted if pid in last_ok},
        "never_refused": never,
        "flickers": flickers,
        "other_app_reads": other_app_reads,
    }
