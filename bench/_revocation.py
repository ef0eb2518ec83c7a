"""Revocation and detection latency, for ``python -m bench envelope``.

* ``revoke_latency_s``: from the ``revoke_key_access`` service call in this process to the
  first refused read in a *second process* (a reader subprocess hammering one record with a
  warm DEK cache); median of several runs.
* ``scoped_revoke_latency_s``: the same for one app instance revoked on its own
  (``revoke_scope``), the reader also reading a record of another app of the org throughout.
* ``detect_latency_s``: from ``DisableKey`` in the moto server to the connection being
  revoked (apps suspended) by the health monitor running every ``monitor_interval_s``; the
  monitor is the real ``run_health_monitor`` task body, ticking in a thread like beat would.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

READER = r"""
import os, sys, time
import django
django.setup()
from dataplane.records import AppSuspended, read_record
from orgs.models import AppInstance
app = AppInstance.objects.get(pk=int(sys.argv[1]))
record_id = int(sys.argv[2])
read_record(app_instance=app, record_id=record_id)   # warm: the DEK is now cached here
print("ready", flush=True)
while True:
    try:
        read_record(app_instance=app, record_id=record_id)
    except AppSuspended:
        print(f"refused {time.time():.6f}", flush=True)
        break
    time.sleep(0.001)
"""


def _reset_to_active(connection, apps) -> None:
    from connections.models import ByokConnection, ConnectionState
    from orgs.models import AppInstance

    ByokConnection.objects.filter(pk=connection.pk).update(
        state=ConnectionState.ACTIVE, revoked_at=None, restore_deadline=None, state_reason=""
    )
    AppInstance.objects.filter(pk__in=[a.pk for a in apps]).update(status="active")


def revoke_latency(app, *, runs: int = 5) -> dict:
    from connections import services as revocation
    from connections.models import ByokConnection
    from dataplane.records import store_record
    from orgs.models import User

    record = store_record(app_instance=app, kind="issue", plaintext=b"latency probe")
    org = app.site.organization
    actor, _ = User.objects.get_or_create(email="bench-admin@example.com")
    connection = ByokConnection.objects.get(organization=org)
    latencies = []
    for _ in range(runs):
        _reset_to_active(connection, [app])
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(app.pk), str(record.pk)],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert reader.stdout.readline().strip() == "ready"
            time.sleep(0.6)  # past one guard interval, so the reader's view is fresh
            started = time.time()
            revocation.revoke_key_access(org=org, actor=actor, reason="bench")
            line = reader.stdout.readline().split()
            latencies.append(float(line[1]) - started)
        finally:
            reader.kill()
            reader.wait()
    _reset_to_active(connection, [app])
    return {
        "revoke_latency_s": round(statistics.median(latencies), 3),
        "revoke_latency_max_s": round(max(latencies), 3),
        "revoke_runs": runs,
    }


def detect_latency(app, *, monitor_interval_s: float = 1.0, runs: int = 3) -> dict:
    from connections import aws
    from connections import services as revocation
    from connections.models import ByokConnection

    connection = ByokConnection.objects.get(organization=app.site.organization)
    key = connection.keys.filter(is_current=True).order_by("region").first()
    kms = aws.customer_admin_client("kms", key.region, connection.aws_account_id)
    key_id = key.key_arn.rsplit("/", 1)[-1]
    latencies = []
    for _ in range(runs):
        _reset_to_active(connection, [app])
        kms.enable_key(KeyId=key_id)
        stop = threading.Event()

        def beat(stop=stop):
            while not stop.is_set():
                revocation.run_health_monitor()
                stop.wait(monitor_interval_s)

        ticker = threading.Thread(target=beat, daemon=True)
        ticker.start()
        time.sleep(monitor_interval_s * 1.5)
        started = time.monotonic()
        kms.disable_key(KeyId=key_id)
        while ByokConnection.objects.get(pk=connection.pk).state != "revoked":
            time.sleep(0.02)
        latencies.append(time.monotonic() - started)
        stop.set()
        ticker.join()
    kms.enable_key(KeyId=key_id)
    _reset_to_active(connection, [app])
    return {
        "detect_latency_s": round(statistics.median(latencies), 3),
        "detect_monitor_interval_s": monitor_interval_s,
    }


SCOPED_READER = r"""
import sys, time
import django
django.setup()
from dataplane.records import AppSuspended, read_record
revoked_app, revoked_record, other_app, other_record = map(int, sys.argv[1:5])
for app, record in ((revoked_app, revoked_record), (other_app, other_record)):
    read_record(app_instance=app, record_id=record)   # warm: both data keys cached here
print("ready", flush=True)
while True:
    read_record(app_instance=other_app, record_id=other_record)   # keeps serving throughout
    try:
        read_record(app_instance=revoked_app, record_id=revoked_record)
    except AppSuspended:
        refused = time.time()
        break
    time.sleep(0.001)
try:
    read_record(app_instance=other_app, record_id=other_record)
    other = "ok"
except AppSuspended:
    other = "refused"
print(f"refused {refused:.6f} {other}", flush=True)
"""


def scoped_revoke_latency(app, *, runs: int = 5) -> dict:
    """``scoped_revoke_latency_s``: like ``revoke_latency_s``, for one app instance revoked on
    its own (``revoke_scope``): from the service call to the first refused read of that app in
    a second process, which keeps reading a record of another app of the same org (from its
    warm cache) before and after; ``scoped_revoke_other_app_ok`` says every run it did."""
    from connections import services
    from connections.models import ScopedRevocation
    from dataplane.records import store_record
    from orgs.models import AppInstance, User

    other, _ = AppInstance.objects.get_or_create(
        site=app.site,
        app=AppInstance.App.CONFLUENCE,
        defaults={"encryption": app.encryption, "status": AppInstance.Status.ACTIVE},
    )
    record = store_record(app_instance=app, kind="issue", plaintext=b"scoped latency probe")
    other_record = store_record(app_instance=other, kind="page", plaintext=b"keeps serving")
    org = app.site.organization
    actor, _ = User.objects.get_or_create(email="bench-admin@example.com")
    latencies, other_ok = [], True
    for _ in range(runs):
        ScopedRevocation.objects.filter(organization=org).update(state="restored")
        reader = subprocess.Popen(
            [sys.executable, "-c", SCOPED_READER]
            + [str(x) for x in (app.pk, record.pk, other.pk, other_record.pk)],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert reader.stdout.readline().strip() == "ready"
            time.sleep(0.6)  # past one guard interval, so the reader's view is fresh
            started = time.time()
            services.revoke_scope(
                org=org, actor=actor, scope=services.Scope.app(app.pk), reason="bench"
            )
            line = reader.stdout.readline().split()
            latencies.append(float(line[1]) - started)
            other_ok = other_ok and line[2] == "ok"
        finally:
            reader.kill()
            reader.wait()
    ScopedRevocation.objects.filter(organization=org).update(state="restored")
    return {
        "scoped_revoke_latency_s": round(statistics.median(latencies), 3),
        "scoped_revoke_latency_max_s": round(max(latencies), 3),
        "scoped_revoke_other_app_ok": other_ok,
        "scoped_revoke_runs": runs,
    }
