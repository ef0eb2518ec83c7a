"""The web master's warm-up (gunicorn ``when_ready``): workers forked after it start with the
URL configuration imported and every template compiled, and it never touches the database
(a connection opened in the master would be shared by every forked worker)."""

import gc

import pytest
from django.template import engines

from byokportal.warmup import warm_up


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()  # the test process is not a gunicorn master


def _cached(name: str) -> bool:
    loader = engines["django"].engine.template_loaders[0]  # Django's cached loader
    return any(key.startswith(name) or key == name for key in loader.get_template_cache)


def test_warm_up_compiles_the_portals_templates_without_a_database(unfrozen):
    # No ``db`` fixture: pytest-django fails any query or connection this test makes.
    engines["django"].engine.template_loaders[0].reset()
    counts = warm_up()

    assert counts["templates"] >= 50
    for name in ("base.html", "connections/byok_status.html", "admin/change_list.html"):
        assert _cached(name), name
    assert gc.get_freeze_count() > 0


def test_gunicorn_runs_the_warm_up_in_the_master_before_forking(unfrozen):
    import runpy
    from pathlib import Path

    config = runpy.run_path(str(Path(__file__).resolve().parents[1] / "deploy/gunicorn.conf.py"))
    assert config["preload_app"] is True  # the master holds the app the hook warms
    engines["django"].engine.template_loaders[0].reset()
    gc.unfreeze()

    config["when_ready"](server=None)  # gunicorn calls it once the master is listening

    assert _cached("base.html")
    assert gc.get_freeze_count() > 0
