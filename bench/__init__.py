"""Benchmarks: ``python -m bench <name>`` runs ``bench/<name>.py``'s ``run() -> dict``.

A benchmark module needs only a ``run()`` returning a JSON-serialisable dict of figures; it is
found automatically (modules whose name starts with ``_`` are helpers, not benchmarks). Call
``setup_django()`` first if it uses the ORM or settings.
"""

import os
import tempfile


def setup_django(**env_defaults: str) -> None:
    """Configure Django for a benchmark: DEBUG on, its own var/ dir unless one is given."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "byokportal.settings")
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("BYOK_VAR_DIR", tempfile.mkdtemp(prefix="byok-bench-"))
    for name, value in env_defaults.items():
        os.environ.setdefault(name, value)

    import django

    django.setup()
