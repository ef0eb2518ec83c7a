"""``python -m bench reencrypt``: re-encryption of a large organization under new keys, online.

Setup: one organization in the USA location (two regions, so every data key has two wrapped
copies), ``RECORDS`` app records under ``DEKS`` data keys, written directly (data keys from
KMS ``GenerateDataKey`` + ``Encrypt``, records sealed with ``dataplane.envelope`` and bulk
inserted), then an approved re-encryption job, run in this process as a worker would run it.

Figures:

* ``rewrap_s`` — the whole re-wrap job (switch, re-wrap of every data key, verification that
  every record decrypts under the new keys, retirement of the old keys), wall clock; with
  ``rewrap_phase_s`` / ``verify_phase_s`` for its two long phases. Target (issue 12): ≤ 30 s
  for 1,000,000 records under 1,000 data keys. Re-wrapping touches data keys, not records; the
  verification opens every record (AES-GCM) with the data key unwrapped from its *new*
  wrapping.
* ``kms_calls`` — KMS requests made by the job (counted at the botocore layer), and
  ``kms_calls_per_dek``: ReEncrypt and Decrypt per data key and region, plus a few DescribeKey
  — proportional to data keys, not records.
* ``rotate_records_per_s`` — full rotation mode (every record decrypted and re-encrypted under
  new data keys, written back a batch per statement, then verified), on ``ROTATE_RECORDS``
  records of a second org, whole job. Target (issue 12): ≥ 20,000.
* ``read_failures_during_job`` — a separate reader process reads random records through the
  data plane for the whole of both jobs (target 0); ``reads_during_job`` how many it read.

* ``load_avg_before`` / ``load_avg_after`` — the machine's 1-minute load average around the
  jobs: the figures move with whatever else runs.

AWS is a ``ThreadedMotoServer`` on a free local port, in its own process; Django runs on
SQLite (WAL) in a temp dir, or on ``DATABASE_URL`` when set. On PostgreSQL the freshly loaded
tables are ``ANALYZE``d before the jobs, as autovacuum would have done for a table in
service: the planner needs statistics of the new rows. Sizes can be lowered for a quick run
with ``BENCH_REENCRYPT_RECORDS`` / ``_DEKS`` / ``_ROTATE_RECORDS`` / ``_ROTATE_DEKS``.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench import setup_django

ACCOUNT = "123456789012"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
RECORDS = int(os.environ.get("BENCH_REENCRYPT_RECORDS", 1_000_000))
DEKS = int(os.environ.get("BENCH_REENCRYPT_DEKS", 1_000))
ROTATE_RECORDS = int(os.environ.get("BENCH_REENCRYPT_ROTATE_RECORDS", 100_000))
ROTATE_DEKS = int(os.environ.get("BENCH_REENCRYPT_ROTATE_DEKS", 100))
APPS = ("jira", "confluence", "jsm")
INSERT_CHUNK = 20_000


def run() -> dict:
    os.environ.update(FAKE_AWS)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(name, None)
    moto = _MotoProcess()
    previous_env = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = moto.url  # the reader process inherits it
    try:
        setup_django(AWS_ENDPOINT_URL=moto.url)
        from django.conf import settings

        previous_setting = settings.AWS_ENDPOINT_URL
        settings.AWS_ENDPOINT_URL = moto.url
        try:
            return _run_with_django()
        finally:
            settings.AWS_ENDPOINT_URL = previous_setting
    finally:
        if previous_env is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous_env
        moto.stop()


def _serve_moto(urls, stop) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.disable(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    urls.put(f"http://{host}:{port}")
    stop.wait()
    server.stop()


class _MotoProcess:
    """moto's ThreadedMotoServer in its own process: KMS answers do not compete with the job
    (and its verification loop) for this process's GIL, as a real KMS endpoint would not."""

    def __init__(self):
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        urls = context.Queue()
        self._process = context.Process(target=_serve_moto, args=(urls, self._stop), daemon=True)
        self._process.start()
        self.url = urls.get(timeout=60)

    def stop(self) -> None:
        self._stop.set()
        self._process.join(timeout=30)


def _run_with_django() -> dict:
    import logging

    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    for name in ("werkzeug", "botocore", "moto", "celery", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("keys").setLevel(logging.WARNING)
    settings.DEBUG = False  # no per-query debug log (time and memory) for a million rows

    from connections import aws
    from dataplane import dek_cache

    _sqlite_for_concurrency()
    call_command("migrate", verbosity=0, interactive=False)
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:  # readers never wait for the job's writes
            cursor.execute("PRAGMA journal_mode=WAL")
    aws.forget_sessions()
    dek_cache.purge_all()
    results: dict = {"database": connection.vendor, "records": RECORDS, "data_keys": DEKS}

    started = time.perf_counter()
    big = _organization(records=RECORDS, deks=DEKS)
    small = _organization(records=ROTATE_RECORDS, deks=ROTATE_DEKS)
    _analyze(connection)
    results["setup_s"] = round(time.perf_counter() - started, 1)

    reader = _Reader([big, small])
    results["load_avg_before"] = round(os.getloadavg()[0], 2)
    try:
        results.update(_rewrap(big))
        results.update(_rotate(small))
    finally:
        results["load_avg_after"] = round(os.getloadavg()[0], 2)
        reads, failures, examples = reader.stop()
    results["reads_during_job"] = reads
    results["read_failures_during_job"] = failures
    if examples:
        results["read_failure_examples"] = examples
    return results


# --- Setup ------------------------------------------------------------------------------------


def _sqlite_for_concurrency() -> None:
    """Two processes write (the job, and the reader's audit events): on SQLite, transactions
    take the write lock when they begin (``BEGIN IMMEDIATE``), so one that read first never
    fails to upgrade with "database is locked"; they wait (busy timeout) instead."""
    from django.db import connection

    if connection.vendor == "sqlite":
        connection.close()
        connection.settings_dict.setdefault("OPTIONS", {})["transaction_mode"] = "IMMEDIATE"


def _organization(*, records: int, deks: int) -> dict:
    """An org with an active connection, ``deks`` data keys and ``records`` records; the
    replacement keys exist in moto. Returns what the jobs and the reader need."""
    from django.db import connection as db
    from django.utils import timezone

    from connections import aws
    from connections.models import ByokConnection, DataKey, DataKeyWrapping, RegionalKey
    from core.locations import get_location
    from dataplane.envelope import DataKeyCipher
    from dataplane.models import AppRecord
    from orgs.models import AppInstance, Organization, Site

    tag = uuid.uuid4().hex[:8]
    org = Organization.objects.create(name=f"Bench {tag}", plan=Organization.Plan.ENTERPRISE)
    site = Site.objects.create(organization=org, name=f"bench-{tag}")
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=ACCOUNT, location="us", state="active"
    )
    regions = get_location("us").regions
    kms = {r: aws.customer_admin_client("kms", r, ACCOUNT) for r in regions}

    def new_key(region):
        return kms[region].create_key(KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")[
            "KeyMetadata"
        ]["Arn"]

    old = {
        r: RegionalKey.objects.create(
            connection=connection, region=r, key_arn=new_key(r), status="enabled"
        )
        for r in regions
    }
    replacement = {r: new_key(r) for r in regions}
    apps = [
        AppInstance.objects.create(
            site=site, app=app, encryption=AppInstance.Encryption.BYOK, status="active"
        )
        for app in APPS
    ]
    first_dek = (DataKey.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
    plan = [(first_dek + i, apps[i % len(apps)]) for i in range(deks)]

    def make(item):
        dek_id, app = item
        context = {"org": str(org.pk), "site": site.name, "app": app.app}
        primary = kms[regions[0]].generate_data_key(
            KeyId=old[regions[0]].key_arn, KeySpec="AES_256", EncryptionContext=context
        )
        blobs = {regions[0]: primary["CiphertextBlob"]}
        for region in regions[1:]:
            blobs[region] = kms[region].encrypt(
                KeyId=old[region].key_arn, Plaintext=primary["Plaintext"], EncryptionContext=context
            )["CiphertextBlob"]
        return dek_id, app, context, DataKeyCipher(dek_id=dek_id, dek=primary["Plaintext"]), blobs

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(make, plan))
    last_of_app = {app.pk: dek_id for dek_id, app, *_ in made}
    DataKey.objects.bulk_create(
        DataKey(
            pk=dek_id,
            app_instance=app,
            encryption_context=context,
            is_current=last_of_app[app.pk] == dek_id,
        )
        for dek_id, app, context, _cipher, _blobs in made
    )
    DataKeyWrapping.objects.bulk_create(
        DataKeyWrapping(data_key_id=dek_id, regional_key=old[r], region=r, blob=blobs[r])
        for dek_id, _app, _context, _cipher, blobs in made
        for r in regions
    )

    first_record = (AppRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
    table = AppRecord._meta.db_table
    now = timezone.now()
    per_dek = max(records // deks, 1)
    sql = (  # the table name is the model's own, not input
        f"INSERT INTO {table} (id, app_instance_id, kind, data_key_id, ciphertext, version, "  # noqa: S608
        "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    rows = []
    record_id = first_record
    for dek_id, app, _context, cipher, _blobs in made:
        for _ in range(per_dek):
            if record_id - first_record >= records:
                break
            body = f'{{"id": {record_id}, "summary": "bench record", "pad": "{"x" * 64}"}}'
            blob = cipher.seal(body.encode(), (org.pk, app.pk, record_id))
            rows.append((record_id, app.pk, "issue", dek_id, blob, 1, now, now))
            record_id += 1
            if len(rows) >= INSERT_CHUNK:
                _insert(db, sql, rows)
                rows.clear()
    if rows:
        _insert(db, sql, rows)
    _reset_id_sequences(db, [DataKey, AppRecord])
    return {
        "org_id": org.pk,
        "connection_id": connection.pk,
        "app_ids": [a.pk for a in apps],
        "first_record": first_record,
        "last_record": record_id - 1,
        "replacement": replacement,
        "records": record_id - first_record,
    }


def _analyze(db) -> None:
    """PostgreSQL: statistics of the rows just loaded (autovacuum's job in a live database)."""
    from connections.models import DataKey, DataKeyWrapping
    from dataplane.models import AppRecord

    if db.vendor != "postgresql":
        return
    with db.cursor() as cursor:
        for model in (AppRecord, DataKey, DataKeyWrapping):
            cursor.execute(f"ANALYZE {db.ops.quote_name(model._meta.db_table)}")


def _reset_id_sequences(db, models: list) -> None:
    """Rows were inserted with explicit ids: move PostgreSQL's id sequences past them, or the
    data plane's next ``DataKey`` insert collides with a bench row (SQLite needs nothing)."""
    from django.core.management.color import no_style

    statements = db.ops.sequence_reset_sql(no_style(), models)
    if statements:
        with db.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)


def _insert(db, sql: str, rows: list) -> None:
    from django.db import transaction

    with transaction.atomic(), db.cursor() as cursor:  # one commit per chunk, not per row
        cursor.executemany(sql, rows)


def _approved_job(org: dict, mode: str):
    from django.utils import timezone

    from orgs.models import User
    from reencryption import job as reencryption_job
    from reencryption.models import ReencryptionJob, ReencryptionRequest

    user = User.objects.create_user(email=f"bench-{uuid.uuid4().hex[:8]}@example.com")
    now = timezone.now()
    request = ReencryptionRequest.objects.create(
        organization_id=org["org_id"],
        connection_id=org["connection_id"],
        requested_by=user,
        mode=mode,
        key_arns=org["replacement"],
        status=ReencryptionRequest.Status.APPROVED,
        approved_at=now,
    )
    return ReencryptionJob.objects.create(
        request=request,
        connection_id=org["connection_id"],
        mode=mode,
        scheduled_for=now,
        batch_size=reencryption_job.default_batch_size(mode),
    )


# --- The jobs ------------------------------------------------------------------------------


class _KmsCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, **kwargs):
        self.count += 1


def _phase_seconds(job) -> dict:
    from reencryption.models import ReencryptionEvent

    at = dict(
        ReencryptionEvent.objects.filter(request_id=job.request_id).values_list(
            "kind", "created_at"
        )
    )
    out = {}
    if "started" in at and "verifying" in at:
        out["main_phase_s"] = round((at["verifying"] - at["started"]).total_seconds(), 2)
    if "verifying" in at and "verified" in at:
        out["verify_phase_s"] = round((at["verified"] - at["verifying"]).total_seconds(), 2)
    return out


def _run_job(org: dict, mode: str) -> tuple[object, float, int]:
    from connections import aws
    from reencryption import job as reencryption_job
    from reencryption.models import ReencryptionJob

    job = _approved_job(org, mode)
    counter = _KmsCounter()
    aws.EVENT_HOOKS.append(("before-send.kms", counter))
    try:
        started = time.perf_counter()
        state = reencryption_job.run_job(job_id=job.pk)
        elapsed = time.perf_counter() - started
    finally:
        aws.EVENT_HOOKS.remove(("before-send.kms", counter))
    job = ReencryptionJob.objects.get(pk=job.pk)
    if state != "completed":
        raise SystemExit(f"the {mode} job ended {state}: {job.state_reason} {job.last_error}")
    return job, elapsed, counter.count


def _rewrap(org: dict) -> dict:
    from connections.models import DataKeyWrapping

    job, elapsed, kms_calls = _run_job(org, "rewrap")
    phases = _phase_seconds(job)
    live_old = DataKeyWrapping.objects.filter(
        data_key__app_instance_id__in=org["app_ids"],
        retired_at=None,
        regional_key__is_current=False,
    ).count()
    return {
        "rewrap_s": round(elapsed, 2),
        "rewrap_phase_s": phases.get("main_phase_s"),
        "verify_phase_s": phases.get("verify_phase_s"),
        "records_verified": job.verified,
        "kms_calls": kms_calls,
        "kms_calls_per_dek": round(kms_calls / max(job.total, 1), 2),
        "live_wrappings_under_old_keys": live_old,
    }


def _rotate(org: dict) -> dict:
    job, elapsed, kms_calls = _run_job(org, "rotate")
    return {
        "rotate_records": job.total,
        "rotate_s": round(elapsed, 2),
        "rotate_records_per_s": round(job.total / elapsed),
        "rotate_kms_calls": kms_calls,
    }


# --- The reader process -----------------------------------------------------------------------


READER_THREADS = 4
#: The reader's DEK cache forgets keys after this long, so it keeps unwrapping data keys from
#: their stored wrappings (old, then new) during the job instead of reading from memory only.
READER_DEK_MAX_AGE_S = 5.0


def _read_forever(orgs: list[dict], stop, ready, results) -> None:
    setup_django()
    _sqlite_for_concurrency()
    import logging
    import threading

    logging.disable(logging.WARNING)
    from django.conf import settings
    from django.db import connection

    from dataplane import dek_cache
    from dataplane.models import AppRecord
    from dataplane.records import read_record

    settings.DEBUG = False
    settings.DEK_CACHE_MAX_AGE_S = READER_DEK_MAX_AGE_S
    dek_cache.CACHE.configure()
    ranges = [(o["first_record"], o["last_record"]) for o in orgs]
    lock = threading.Lock()
    totals = {"reads": 0, "failures": 0}
    examples: list[str] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        reads = failures = 0
        try:
            while not stop.is_set():
                low, high = ranges[reads % len(ranges)]
                record_id = rng.randint(low, high)
                app_id = (
                    AppRecord.objects.filter(pk=record_id)
                    .values_list("app_instance_id", flat=True)
                    .first()
                )
                try:
                    read_record(app_instance=app_id, record_id=record_id)
                except Exception as exc:  # noqa: BLE001 — every failure counts, whatever it is
                    failures += 1
                    with lock:
                        if len(examples) < 5:
                            examples.append(f"#{record_id}: {type(exc).__name__}: {exc}"[:200])
                reads += 1
        finally:
            with lock:
                totals["reads"] += reads
                totals["failures"] += failures
            connection.close()

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(READER_THREADS)]
    for thread in threads:
        thread.start()
    ready.set()
    for thread in threads:
        thread.join()
    results.put((totals["reads"], totals["failures"], examples))


class _Reader:
    """A separate process reading random records through the data plane until stopped."""

    def __init__(self, orgs: list[dict]):
        context = multiprocessing.get_context("spawn")
        self.stop_event = context.Event()
        ready = context.Event()
        self.results = context.Queue()
        self.process = context.Process(
            target=_read_forever, args=(orgs, self.stop_event, ready, self.results), daemon=True
        )
        self.process.start()
        if not ready.wait(timeout=120):
            raise SystemExit("the reader process did not start")
        time.sleep(1.0)  # let it warm up: its reads run before the job starts too

    def stop(self) -> tuple[int, int, list[str]]:
        self.stop_event.set()
        try:
            return self.results.get(timeout=120)
        finally:
            self.process.join(timeout=30)
