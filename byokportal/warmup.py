"""Warm a web process before it serves, so a fresh worker's first request is not its slowest.

Run once by gunicorn's master (``deploy/gunicorn.conf.py``, ``when_ready``) after it has
loaded the app (``preload_app``) and before it forks workers: every worker — the first ones
and those a graceful restart (HUP) spawns while the others are busy — starts with the URL
configuration imported and every template compiled (Django's cached template loader keeps
them per process, and a fork inherits them). Without it each new worker pays ~100 ms of
imports and template compilation on its first pages, all of them at once after a HUP.

Then ``gc.freeze()``: the objects loaded so far move to the collector's permanent
generation, so the workers' collections do not walk (and so copy, page by page) the memory
they share with the master.

It opens no database connection and makes no network call: a connection opened here would
be shared by every forked worker.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

TEMPLATE_SUFFIXES = (".html", ".txt")


def warm_up() -> dict[str, int]:
    """Import the URL configuration, compile every template, freeze the heap. Returns
    counts for the log line."""
    from django.urls import get_resolver

    resolver = get_resolver()
    resolver.url_patterns  # noqa: B018 (imports every view module)
    resolver.reverse_dict  # noqa: B018 (builds the reverse lookup tables once)
    compiled, skipped = _compile_templates()
    gc.collect()
    gc.freeze()
    counts = {"templates": compiled, "templates_skipped": skipped}
    logger.info("web process warmed up", extra=counts)
    return counts


def _compile_templates() -> tuple[int, int]:
    from django.template import TemplateSyntaxError, engines
    from django.template.utils import get_app_template_dirs

    compiled = skipped = 0
    for backend in engines.all():
        engine = getattr(backend, "engine", None)  # Django's own template engine only
        if engine is None:
            continue
        dirs = [
            *map(Path, engine.dirs),
            *(get_app_template_dirs("templates") if engine.app_dirs else ()),
        ]
        names = {
            path.relative_to(base).as_posix()
            for base in dirs
            for path in Path(base).rglob("*")
            if path.suffix in TEMPLATE_SUFFIXES and path.is_file()
        }
        for name in sorted(names):
            try:
                backend.get_template(name)
            except (TemplateSyntaxError, UnicodeDecodeError):
                # A third-party template for an optional feature (a tag library that is not
                # installed): it was never going to be rendered here.
                skipped += 1
            else:
                compiled += 1
    return compiled, skipped
