"""`make lint`: no module of the portal outside migrations and tests is over MAX_LINES lines.

Small modules over god-files: a module that grows past this becomes a package split by
sub-domain. Prints every offender and exits 1.
"""

import sys
from pathlib import Path

MAX_LINES = 600
ROOT = Path(__file__).resolve().parent.parent
SKIP_PARTS = {"migrations", "tests", ".venv", "var", "node_modules", "test-results"}


def oversized() -> list[tuple[Path, int]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if SKIP_PARTS.intersection(rel.parts):
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            found.append((rel, lines))
    return found


def main() -> int:
    found = oversized()
    for rel, lines in found:
        print(f"{rel}: {lines} lines (over {MAX_LINES}): split it by responsibility")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
