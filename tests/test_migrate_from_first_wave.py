"""A database of the first wave (app ``keys``, commit 99b6b80) migrates to the apps-by-concern
layout with nothing lost, and the demo still works on it.

The old database is built by the old code itself: ``git archive 99b6b80`` into a temporary
directory, then ``manage.py migrate`` and ``manage.py seed_demo`` there (against a moto server,
so Acme's BYOK side and its encrypted records exist). The new code's ``manage.py migrate`` then
runs on the same SQLite file. Every row of every old ``keys_*`` table must be in its new table,
the content types and the staff groups' permissions must have moved, the migration state must
match the models, the audit chain must verify, and ``seed_demo`` plus a record read must work.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FIRST_WAVE = "99b6b80"
#: Where each model of the old ``keys`` app lives now.
NEW_APPS = ("connections", "dataplane", "setup", "reencryption")
#: Old tables that must keep their rows (besides ``keys_*``).
KEPT_PREFIXES = ("orgs_", "audit_", "auth_group", "auth_permission", "otp_")

READ_ONE_RECORD = """
from dataplane.models import AppRecord
from dataplane.records import read_record
record = AppRecord.objects.filter(app_instance__site__name="acme-secure").order_by("pk").first()
print("PLAINTEXT", read_record(app_instance=record.app_instance, record_id=record.pk).decode())
"""


def _old_tree(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the first wave's code cannot be checked out")
    probe = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{FIRST_WAVE}^{{commit}}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"commit {FIRST_WAVE} (the first wave) is not in this checkout's history")
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", FIRST_WAVE], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    return old


def _env(tmp_path: Path, moto_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "BYOK_", "PYTEST", "DEMO_"))
        and k not in ("PYTHONPATH", "AWS_PROFILE")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="byokportal.settings",
        DEBUG="1",
        DATABASE_URL=f"sqlite:///{tmp_path}/old.sqlite3",
        BYOK_VAR_DIR=str(tmp_path / "var"),
        CELERY_TASK_ALWAYS_EAGER="1",
        CELERY_BROKER_URL="memory://",
        AWS_ENDPOINT_URL=moto_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SECURITY_TOKEN="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def manage(cwd: Path, env: dict[str, str], *args: str, check: bool = True):
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, (
            f"manage.py {' '.join(args)} in {cwd} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def _tables(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}  # noqa: S608


def _query(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


GROUP_PERMISSIONS = """
SELECT g.name, ct.model, p.codename
FROM auth_group g
JOIN auth_group_permissions gp ON gp.group_id = g.id
JOIN auth_permission p ON p.id = gp.permission_id
JOIN django_content_type ct ON ct.id = p.content_type_id
"""


def test_a_first_wave_database_migrates_with_nothing_lost(tmp_path, moto_reset):
    old = _old_tree(tmp_path)
    env = _env(tmp_path, moto_reset.url)
    db = tmp_path / "old.sqlite3"
    (tmp_path / "var").mkdir()

    # The first wave builds its database and demo data.
    manage(old, env, "migrate", "--noinput")
    seeded = manage(old, env, "seed_demo")
    assert "encrypted" in seeded.stdout, seeded.stdout
    before = _tables(db)
    legacy = {t: n for t, n in before.items() if t.startswith("keys_")}
    assert legacy.get("keys_byokconnection") and legacy.get("keys_apprecord"), legacy
    kept = {t: n for t, n in before.items() if t.startswith(KEPT_PREFIXES)}
    group_permissions = set(_query(db, GROUP_PERMISSIONS))
    assert group_permissions, "the first wave's staff groups hold no permissions"
    keys_content_types = {
        r[0] for r in _query(db, "SELECT model FROM django_content_type WHERE app_label='keys'")
    }
    assert keys_content_types

    # The new code migrates the same file.
    manage(ROOT, env, "migrate", "--noinput")
    after = _tables(db)

    assert not [t for t in after if t.startswith("keys_")], "keys_* tables are left"
    moved: dict[str, str] = {}
    for table, count in legacy.items():
        model = table.removeprefix("keys_")
        homes = [f"{app}_{model}" for app in NEW_APPS if f"{app}_{model}" in after]
        assert len(homes) == 1, f"{table}: no single new table ({homes})"
        moved[table] = homes[0]
        assert after[homes[0]] == count, (
            f"{table} had {count} rows, {homes[0]} has {after[homes[0]]}"
        )
    for expected in (
        "connections_byokconnection",
        "connections_regionalkey",
        "connections_datakey",
        "connections_datakeywrapping",
        "dataplane_apprecord",
        "dataplane_appdatahealth",
        "setup_setuprequest",
        "setup_requestevent",
        "setup_preflightrun",
    ):
        assert expected in moved.values(), f"{expected} did not receive a keys_* table"
    assert any(t.startswith("reencryption_") for t in moved.values())
    for table, count in kept.items():
        assert table in after, f"{table} disappeared"
        if table.startswith("audit_auditevent") or table == "audit_chainhead":
            assert after[table] >= count
        elif table == "auth_group_permissions":
            assert after[table] >= count, f"{table}: {count} → {after[table]} rows"
        elif not table.startswith("auth_permission"):
            assert after[table] == count, f"{table}: {count} → {after[table]} rows"

    # Content types and permissions moved with their models.
    assert not _query(db, "SELECT id FROM django_content_type WHERE app_label='keys'")
    labels = dict(
        _query(db, "SELECT model, app_label FROM django_content_type WHERE app_label != 'keys'")
    )
    for model in keys_content_types:
        assert labels.get(model) in NEW_APPS, f"content type {model} went to {labels.get(model)}"
    assert group_permissions <= set(_query(db, GROUP_PERMISSIONS))
    assert not _query(db, "SELECT app FROM django_migrations WHERE app='keys'")

    # The migration state matches the models, and the audit chain is intact.
    manage(ROOT, env, "makemigrations", "--check", "--dry-run")
    manage(ROOT, env, "verify_audit_chain")

    # The demo still works on the migrated database: seed again, read an encrypted record.
    reseeded = manage(ROOT, env, "seed_demo")
    assert "already set up" in reseeded.stdout, reseeded.stdout
    assert "imported events in Acme's audit log" in reseeded.stdout, reseeded.stdout
    assert "replacement keys (" in reseeded.stdout, reseeded.stdout
    assert _tables(db)["dataplane_apprecord"] == after["dataplane_apprecord"]
    read = manage(ROOT, env, "shell", "-c", READ_ONE_RECORD)
    assert "PLAINTEXT {" in read.stdout, read.stdout + read.stderr
    manage(ROOT, env, "verify_audit_chain")
