"""``python -m bench <name>|all``: run benchmarks, print their figures as JSON.

The last line on stdout is always one JSON object: a benchmark's own dict for ``<name>``, or
``{name: dict, ...}`` for ``all`` (each benchmark's line is also printed as it finishes).
``python -m bench --list`` lists the benchmarks found in bench/.
"""

import importlib
import json
import os
import pkgutil
import sys
import time

import bench


def discover() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(bench.__path__)
        if not info.name.startswith("_") and not info.ispkg
    )


def run_one(name: str) -> dict:
    module = importlib.import_module(f"bench.{name}")
    run = getattr(module, "run", None)
    if not callable(run):
        raise SystemExit(f"bench.{name} has no run() function")
    started, load_before = time.perf_counter(), os.getloadavg()
    result = run()
    if not isinstance(result, dict):
        raise SystemExit(f"bench.{name}.run() returned {type(result).__name__}, not dict")
    result.setdefault("benchmark", name)
    result.setdefault("wall_s", round(time.perf_counter() - started, 3))
    # Every figure moves with the machine's load: each line says what it was (1, 5, 15 min).
    result.setdefault("load_avg_before", [round(x, 2) for x in load_before])
    result.setdefault("load_avg_after", [round(x, 2) for x in os.getloadavg()])
    return result


def main(argv: list[str]) -> int:
    names = discover()
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        print("benchmarks: " + (", ".join(names) or "(none yet)"), file=sys.stderr)
        return 2
    target = argv[0]
    if target == "--list":
        print("\n".join(names))
        return 0
    if target == "all":
        results = {}
        for name in names:
            results[name] = run_one(name)
            print(json.dumps(results[name], sort_keys=True), flush=True)
        print(json.dumps(results, sort_keys=True))
        return 0
    if target not in names:
        print(
            f"unknown benchmark {target!r}; known: {', '.join(names) or '(none yet)'}",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(run_one(target), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
