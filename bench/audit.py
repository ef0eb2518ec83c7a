"""``python -m bench audit``: the audit log at scale, on PostgreSQL.

Needs ``DATABASE_URL`` to point at PostgreSQL (the services lane's
``postgres://postgres@127.0.0.1:5432/byokportal``); it refuses anything else. The benchmark
works in its own database (``byokportal_bench``, or ``BENCH_AUDIT_DATABASE``), which it
creates, migrates and seeds: ``BENCH_AUDIT_EVENTS`` events (default 5,000,000) over a year
ending now, one in five of them belonging to the measured organization (so 1,000,000 of
5,000,000), the rest spread over 40 other organizations, interleaved in time as real traffic
is. Seeding is one ``INSERT … SELECT generate_series`` per chunk, in two connections, with
the table's secondary indexes and constraints dropped during the load and rebuilt from their
own definitions afterwards, then ``VACUUM ANALYZE``. A seeded database is reused by later
runs (same size, same schema); ``BENCH_AUDIT_RESEED=1`` starts over.

Figures (server time through Django's test ``Client``: middleware, view, queries, template):

* ``first_page_p95_ms`` — ``/orgs/<id>/audit/``: the newest 50 events and the 24-hour chart.
* ``filtered_p95_ms`` — the same page over a mix of filter combinations, each with its chart
  over its own range (per case in ``filtered_p95_ms_by_case``).
* ``deep_page_p95_ms`` — page 1,000, loaded by its "Older" link; the cursors of pages 1 … 999
  are followed through the pagination function first (``deep_walk_ms_per_page``).
* ``admin_changelist_p95_ms`` — the AuditEvent changelist in the Django admin, as a superuser;
  ``admin_changelist_proposed_p95_ms`` with the changes proposed for ``audit/admin.py``
  (applied to this process only, see ``_proposed_admin_p95``).
* ``export_events_per_s`` / ``export_peak_rss_mb`` — the JSON export of the organization's
  whole log (Records, then Chain, then Digests), consumed as it streams; RSS sampled from
  ``/proc/self/status`` while it runs (``export_rss_growth_mb`` is the growth over the
  baseline, ``export_rss_at_10pct_mb`` the RSS after a tenth of the events, to show it stays
  flat). CSV: ``export_csv_events_per_s``.

The ``EXPLAIN (ANALYZE, BUFFERS)`` plan of every query a measured page ran is printed to
stderr. The machine's load average is reported too (``load_avg_*``): on a shared 2-core
machine, other work shows up in every figure. Targets: pages ≤ 50 ms p95, admin changelist
≤ 200 ms, export ≥ 20,000 events/s with flat memory.
"""

from __future__ import annotations

import gc
import math
import os
import re
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from bench import setup_django

DEFAULT_EVENTS = 5_000_000
ORG_SHARE = 5  # one event in five belongs to the measured organization
OTHER_GROUPS = 10  # other orgs: 4 × 10 = 40
SPAN_DAYS = 365
CHUNK = 500_000
LOADERS = 2
SEED_VERSION = 1
SAMPLES = int(os.environ.get("BENCH_AUDIT_SAMPLES", "40"))
DEEP_PAGE = 1000
ACCOUNT = "111122223333"
ROLE_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/byok-key-management/byok-portal"
PASSWORD = "bench-audit-pass"  # noqa: S105 - a throw-away local benchmark database


def log(message: str) -> None:
    print(f"[bench audit] {message}", file=sys.stderr, flush=True)


# --- database -------------------------------------------------------------------------------


def _require_postgres(url: str) -> None:
    if urlsplit(url).scheme not in ("postgres", "postgresql", "pgsql", "postgis"):
        raise SystemExit(
            "bench audit needs PostgreSQL: set DATABASE_URL to a PostgreSQL server, e.g. the "
            "services lane's postgres://postgres@127.0.0.1:5432/byokportal "
            f"(DATABASE_URL is {url or 'not set'!r})."
        )


def _connect_admin(url: str):
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
        dbname="postgres",
        autocommit=True,
    )


def _database_exists(url: str, name: str) -> bool:
    with _connect_admin(url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()


def _recreate_database(url: str, name: str) -> None:
    from psycopg import sql

    with _connect_admin(url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _seed_marker(total: int) -> dict | None:
    """The seed this database holds, if it is the one asked for."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('bench_audit_seed')")
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute("SELECT total, org_id, version, seeded_at FROM bench_audit_seed")
        row = cursor.fetchone()
    if row is None or row[0] != total or row[2] != SEED_VERSION:
        return None
    return {"total": row[0], "org_id": row[1], "seeded_at": row[3]}


def run() -> dict:
    url = os.environ.get("DATABASE_URL", "")
    _require_postgres(url)
    total = int(os.environ.get("BENCH_AUDIT_EVENTS", DEFAULT_EVENTS))
    if total < ORG_SHARE * DEEP_PAGE * 60:
        raise SystemExit(f"BENCH_AUDIT_EVENTS must be at least {ORG_SHARE * DEEP_PAGE * 60:,}")
    name = os.environ.get("BENCH_AUDIT_DATABASE", "byokportal_bench")
    if not _database_exists(url, name):
        _recreate_database(url, name)
    os.environ["DATABASE_URL"] = urlunsplit(urlsplit(url)._replace(path="/" + name))
    try:
        setup_django()
    finally:
        os.environ["DATABASE_URL"] = url

    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit(f"bench audit needs PostgreSQL; Django is set up on {connection.vendor}")
    previous_name = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = name  # also when Django was set up before (bench all)
    try:
        return _run(url, name, total)
    finally:
        connection.close()
        connection.settings_dict["NAME"] = previous_name


def _run(url: str, name: str, total: int) -> dict:
    from django.core.management import call_command
    from django.db import connection

    started = time.perf_counter()
    reseed = os.environ.get("BENCH_AUDIT_RESEED") == "1"
    call_command("migrate", verbosity=0, interactive=False)
    marker = None if reseed else _seed_marker(total)
    if marker is None:
        connection.close()
        _recreate_database(url, name)
        call_command("migrate", verbosity=0, interactive=False)
        seed_s = _seed(url, name, total)
        org_id = _seed_marker(total)["org_id"]
    else:
        seed_s = None
        org_id = marker["org_id"]
        log(
            f"reusing the seeded database {name} ({total:,} events; BENCH_AUDIT_RESEED=1 redoes it)"
        )
    figures = {
        "events_total": total,
        "events_org": total // ORG_SHARE,
        "seed_s": round(seed_s, 1) if seed_s is not None else None,
        "seed_reused": seed_s is None,
        "database": name,
        "postgres": connection.cursor().connection.info.server_version,
    }
    figures["load_avg_before"] = round(os.getloadavg()[0], 2)
    figures.update(_measure(org_id))
    figures["load_avg_after"] = round(os.getloadavg()[0], 2)
    figures["setup_and_run_s"] = round(time.perf_counter() - started, 1)
    return figures


# --- seeding --------------------------------------------------------------------------------

# Templates: one complete CloudTrail record per (org slot, event variant). A variant is one of
# 12 (kind, name, source) choices × 2 regions × 3 outcomes (no error, AccessDenied,
# DisabledException). Slot 0 is the measured organization; slots 1…40 the others.
_TEMPLATES = """
CREATE TABLE bench_audit_template AS
SELECT o.slot, n.choice * 6 + r.ri * 3 + er.ei AS variant, n.kind, n.name, n.source,
       p.principal, k.key_arn, r.region, er.error,
       jsonb_build_object(
           'eventVersion', '1.09',
           'userIdentity', CASE WHEN n.kind = 'portal'
               THEN jsonb_build_object('type', 'PortalUser', 'principalId', 'user:' || o.slot,
                                       'userName', p.principal)
               ELSE jsonb_build_object('type', 'AssumedRole', 'arn', o.role_arn,
                                       'principalId', 'AROAEXAMPLE:byok-portal',
                                       'accountId', %(account)s) END,
           'eventSource', n.source,
           'eventName', n.name,
           'awsRegion', r.region,
           'sourceIPAddress', 'byok.portal.vendor.example',
           'userAgent', 'byok-portal',
           'requestParameters', CASE WHEN k.key_arn = '' THEN NULL
               ELSE jsonb_build_object(
                   'keyId', k.key_arn,
                   'encryptionContext', jsonb_build_object(
                       'org', o.org_id::text, 'site', 'bench-site', 'app', 'jira'),
                   'encryptionAlgorithm', 'SYMMETRIC_DEFAULT') END,
           'responseElements', NULL,
           'readOnly', n.kind <> 'portal',
           'resources', CASE WHEN k.key_arn = '' THEN '[]'::jsonb
               ELSE jsonb_build_array(jsonb_build_object(
                   'accountId', %(account)s, 'type', 'AWS::KMS::Key', 'ARN', k.key_arn)) END,
           'eventType', 'AwsApiCall',
           'managementEvent', true,
           'recipientAccountId', %(account)s,
           'eventCategory', 'Management'
       ) || CASE WHEN er.error = '' THEN '{}'::jsonb
               ELSE jsonb_build_object('errorCode', er.error,
                                       'errorMessage', 'Refused by the key policy.') END
           AS record
FROM bench_audit_slot AS o
CROSS JOIN (VALUES
    (0, 'portal', 'ConsoleLogin', 'byok.portal.vendor.example'),
    (1, 'portal', 'SubmitSetupRequest', 'byok.portal.vendor.example'),
    (2, 'portal', 'RevokeKeyAccess', 'byok.portal.vendor.example'),
    (3, 'portal', 'ExportAuditEvents', 'byok.portal.vendor.example'),
    (4, 'portal', 'ConsoleLogout', 'byok.portal.vendor.example'),
    (5, 'key-usage', 'Decrypt', 'kms.amazonaws.com'),
    (6, 'key-usage', 'GenerateDataKey', 'kms.amazonaws.com'),
    (7, 'key-usage', 'Encrypt', 'kms.amazonaws.com'),
    (8, 'key-usage', 'DescribeKey', 'kms.amazonaws.com'),
    (9, 'key-usage', 'AssumeRole', 'sts.amazonaws.com'),
    (10, 'ingested', 'Decrypt', 'kms.amazonaws.com'),
    (11, 'ingested', 'DisableKey', 'kms.amazonaws.com')
) AS n(choice, kind, name, source)
CROSS JOIN (VALUES (0, 'us-east-1'), (1, 'us-west-2')) AS r(ri, region)
CROSS JOIN (VALUES (0, ''), (1, 'AccessDenied'), (2, 'DisabledException')) AS er(ei, error)
CROSS JOIN LATERAL (
    SELECT CASE WHEN n.kind = 'portal' THEN 'admin' || o.slot || '@customer.example'
                WHEN n.name = 'AssumeRole' THEN 'byok.portal.vendor.example'
                ELSE o.role_arn END AS principal
) AS p
CROSS JOIN LATERAL (
    SELECT CASE WHEN n.source <> 'kms.amazonaws.com' THEN ''
                WHEN r.region = 'us-east-1' THEN o.key_east ELSE o.key_west END AS key_arn
) AS k
"""

# One row per generated event: ``g`` runs 1…total; every fifth row is the measured org's
# (slot 0), the others cycle over slots 1…40, interleaved in time like real traffic. ``h`` and
# ``e`` are cheap hashes of the row that pick its variant (5 % portal actions, 5 % ingested,
# the rest key usage; 1 % errors). Sequences are dense per chain and (chain, sequence) unique;
# prev_hash points at the previous link's hash, but hashes are not the SHA-256 of the record:
# verification is not what this benchmark measures. Only the measured org's records get their
# own eventTime / eventID / requestID (what an export of that org reads); the other orgs'
# rows carry their template record as it is: the same size on disk, a third of the CPU.
_INSERT = """
INSERT INTO audit_auditevent ({columns})
SELECT {values}
FROM (
    SELECT g,
           CASE WHEN g % 5 = 0 THEN 0
                ELSE (g % 5 - 1) + 4 * ((g / 5) % {groups}) + 1 END AS slot,
           CASE WHEN g % 5 = 0 THEN g / 5 ELSE (g / 5) / {groups} + 1 END AS seq,
           CASE WHEN g % 5 = 0 THEN 5 ELSE 5 * {groups} END AS stride,
           %(t_end)s::timestamptz - ({total} - g) * %(step_us)s * interval '1 microsecond' AS t,
           ('e' || lpad(to_hex(g), 31, '0'))::uuid AS event_id,
           ('c' || lpad(to_hex(g), 31, '0'))::uuid::text AS request_id,
           (CASE WHEN h < 50 THEN h % 5
                 WHEN h < 100 THEN 10 + h % 2
                 WHEN h % 20 < 10 THEN 5
                 WHEN h % 20 < 15 THEN 6
                 WHEN h % 20 < 17 THEN 7
                 WHEN h % 20 < 18 THEN 8
                 ELSE 9 END) * 6
           + ((g / 5) % 2) * 3
           + CASE WHEN e < 5 THEN 1 WHEN e < 10 THEN 2 ELSE 0 END AS variant
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
    CROSS JOIN LATERAL (
        SELECT ((g / 5) * 2654435761 + (g % 5) * 40503) % 1000 AS h,
               ((g / 5) * 40503 + (g % 5) * 7919) % 1000 AS e
    ) AS hashes
    OFFSET 0
) AS s
JOIN bench_audit_template AS tpl USING (slot, variant)
JOIN bench_audit_slot AS o USING (slot)
"""

_EVENT_TIME_TEXT = "to_char(s.t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

# Expressions for the columns the bench knows; any other column gets its model default.
_EXPRESSIONS = {
    "organization_id": "o.org_id",
    "chain": "o.chain",
    "sequence": "s.seq",
    "prev_hash": "lpad(to_hex(s.g - s.stride), 64, '0')",
    "hash": "lpad(to_hex(s.g), 64, '0')",
    "kind": "tpl.kind",
    "event_id": "s.event_id",
    "event_time": "s.t",
    "event_source": "tpl.source",
    "event_name": "tpl.name",
    "principal": "tpl.principal",
    "key_arn": "tpl.key_arn",
    "aws_region": "tpl.region",
    "error_code": "tpl.error",
    "request_id": "s.request_id",
    "record": (
        "CASE WHEN s.slot = 0 THEN tpl.record || jsonb_build_object("
        f"'eventTime', {_EVENT_TIME_TEXT}, 'eventID', s.event_id::text, "
        "'requestID', s.request_id) ELSE tpl.record END"
    ),
}


def _insert_sql(total: int) -> tuple[str, dict]:
    """The INSERT for the AuditEvent table as the current migrations define it."""
    import json

    from django.db.models import NOT_PROVIDED

    from audit.models import AuditEvent

    columns, values, params = [], [], {}
    for field in AuditEvent._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(field.column)
        if field.column in _EXPRESSIONS:
            values.append(_EXPRESSIONS[field.column])
        elif field.default is not NOT_PROVIDED or field.null:
            default = field.get_default()
            key = f"default_{field.column}"
            params[key] = json.dumps(default) if isinstance(default, (dict, list)) else default
            values.append(f"%({key})s")
        else:
            raise SystemExit(
                f"bench audit does not know how to fill the new column "
                f"audit_auditevent.{field.column}: add it to bench/audit.py's _EXPRESSIONS"
            )
    sql = _INSERT.format(
        columns=", ".join(columns),
        values=",\n       ".join(values),
        groups=OTHER_GROUPS,
        total=total,
    )
    return re.sub(r"%(?!\()", "%%", sql), params  # modulo operators, not placeholders


def _seed(url: str, name: str, total: int) -> float:
    from django.db import connection

    from audit.models import ChainHead
    from orgs.models import Membership, Organization, User

    started = time.perf_counter()
    log(f"seeding {total:,} events into {name} …")
    measured = Organization.objects.create(name="Bench Measured Org", plan="enterprise")
    others = [
        Organization.objects.create(name=f"Bench Other Org {i}", plan="enterprise")
        for i in range(1, 4 * OTHER_GROUPS + 1)
    ]
    admin = User.objects.create_user(email="bench-admin@customer.example", password=PASSWORD)
    Membership.objects.create(user=admin, organization=measured, role=Membership.Role.ADMIN)
    User.objects.create_superuser(email="bench-root@vendor.example", password=PASSWORD)

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE bench_audit_slot (slot int PRIMARY KEY, org_id bigint, chain text, "
            "role_arn text, key_east text, key_west text)"
        )
        for slot, org in enumerate([measured, *others]):
            cursor.execute(
                "INSERT INTO bench_audit_slot VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    slot,
                    org.pk,
                    f"org:{org.pk}",
                    ROLE_ARN,
                    f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{_key_uuid(org.pk, 1)}",
                    f"arn:aws:kms:us-west-2:{ACCOUNT}:key/{_key_uuid(org.pk, 2)}",
                ],
            )
        cursor.execute(_TEMPLATES, {"account": ACCOUNT})
        build, attach = _drop_secondary_indexes(cursor)
    connection.close()

    sql, params = _insert_sql(total)
    t_end = datetime.now(UTC).replace(microsecond=0)
    params.update(t_end=t_end, step_us=int(SPAN_DAYS * 86_400_000_000 / total))
    chunks = [(lo, min(lo + CHUNK - 1, total)) for lo in range(1, total + 1, CHUNK)]
    load_started = time.perf_counter()
    _parallel_load(url, name, sql, params, chunks)
    log(f"  rows loaded in {time.perf_counter() - load_started:.1f} s")

    index_started = time.perf_counter()
    # Two builds side by side, one core each (largest first), then the constraints.
    _parallel(
        url,
        name,
        sorted(build, key=lambda statement: -len(statement)),
        lambda conn, statement: conn.execute(statement),
        setup=("SET maintenance_work_mem = '512MB'", "SET max_parallel_maintenance_workers = 0"),
    )
    with connection.cursor() as cursor:
        for statement in attach:
            cursor.execute(statement)
    log(
        f"  {len(build)} indexes and {len(attach)} constraints rebuilt in "
        f"{time.perf_counter() - index_started:.1f} s"
    )

    ChainHead.objects.bulk_create(
        ChainHead(chain=chain, sequence=sequence, head_hash=head_hash)
        for chain, sequence, head_hash in _chain_heads()
    )
    vacuum_started = time.perf_counter()
    connection.close()
    with _connect_db(url, name) as conn:
        conn.execute("VACUUM ANALYZE audit_auditevent")
        conn.execute("ANALYZE")
    log(f"  VACUUM ANALYZE in {time.perf_counter() - vacuum_started:.1f} s")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE bench_audit_seed (total bigint, org_id bigint, version int, "
            "seeded_at timestamptz)"
        )
        cursor.execute(
            "INSERT INTO bench_audit_seed VALUES (%s, %s, %s, now())",
            [total, measured.pk, SEED_VERSION],
        )
    elapsed = time.perf_counter() - started
    log(f"  seeded in {elapsed:.1f} s")
    return elapsed


def _key_uuid(org_id: int, region: int) -> str:
    return f"{org_id:08x}-{region:04x}-4000-8000-{org_id * 7919 + region:012x}"


def _connect_db(url: str, name: str):
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
        dbname=name,
        autocommit=True,
    )


def _drop_secondary_indexes(cursor) -> tuple[list[str], list[str]]:
    """Drop every index and constraint of the event table but its primary key.

    Returns the statements that put them back exactly as the migrations defined them: the
    indexes (those behind unique constraints included), which can be built side by side, and
    then the constraints (a unique one adopts its index with ``USING INDEX``).
    """
    cursor.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid), "
        "CASE WHEN contype = 'u' THEN pg_get_indexdef(conindid) END "
        "FROM pg_constraint WHERE conrelid = 'audit_auditevent'::regclass "
        "AND contype IN ('u', 'f', 'c') ORDER BY conname"
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
        "WHERE indrelid = 'audit_auditevent'::regclass AND NOT indisprimary "
        "AND indexrelid NOT IN (SELECT conindid FROM pg_constraint "
        "                       WHERE conrelid = 'audit_auditevent'::regclass)"
    )
    indexes = cursor.fetchall()
    for conname, _type, _definition, _index in constraints:
        cursor.execute(f'ALTER TABLE audit_auditevent DROP CONSTRAINT "{conname}"')
    for index_name, _definition in indexes:
        cursor.execute(f"DROP INDEX {index_name}")
    build = [definition for _name, definition in indexes]
    attach = []
    for conname, contype, definition, index_definition in constraints:
        if contype == "u":
            build.append(index_definition)
            attach.append(
                f'ALTER TABLE audit_auditevent ADD CONSTRAINT "{conname}" UNIQUE USING INDEX '
                f'"{conname}"'
            )
        else:
            attach.append(f'ALTER TABLE audit_auditevent ADD CONSTRAINT "{conname}" {definition}')
    return build, attach


def _parallel(url: str, name: str, jobs: list, run_job, *, setup: tuple[str, ...] = ()) -> None:
    """Run ``run_job(conn, job)`` for every job over ``LOADERS`` connections."""
    queue = list(jobs)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker():
        try:
            with _connect_db(url, name) as conn:
                for statement in setup:
                    conn.execute(statement)
                while True:
                    with lock:
                        if not queue or errors:
                            return
                        job = queue.pop(0)
                    run_job(conn, job)
        except BaseException as exc:  # re-raised in the main thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(LOADERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _parallel_load(url: str, name: str, sql: str, params: dict, chunks: list) -> None:
    done = [0]
    lock = threading.Lock()

    def load(conn, chunk):
        lo, hi = chunk
        conn.execute(sql, {**params, "lo": lo, "hi": hi})
        with lock:
            done[0] += hi - lo + 1
            log(f"  {done[0]:,} rows")

    _parallel(url, name, chunks, load, setup=("SET synchronous_commit = off",))


def _chain_heads() -> list[tuple[str, int, str]]:
    """(chain, last sequence, its hash) of every seeded chain."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (chain) chain, sequence, hash FROM audit_auditevent "
            "ORDER BY chain, sequence DESC"
        )
        return cursor.fetchall()


# --- measuring --------------------------------------------------------------------------------


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _timed_get(client, url: str, data=None) -> tuple[float, object]:
    started = time.perf_counter()
    response = client.get(url, data)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"GET {url} {data or ''} answered {response.status_code}")
    return elapsed, response


def _sample(client, url: str, data=None, n: int = SAMPLES, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        _timed_get(client, url, data)
    return [_timed_get(client, url, data)[0] for _ in range(n)]


def _explain(label: str, run_request) -> None:
    """Run the request once, then print EXPLAIN ANALYZE of each audit query it made."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        run_request()
    seen = set()
    print(f"\n===== {label} =====", file=sys.stderr)
    for query in captured.captured_queries:
        sql = query["sql"]
        if "audit_auditevent" not in sql or not sql.lstrip().upper().startswith("SELECT"):
            continue
        shape = re.sub(r"'[^']*'|\b\d+\b", "?", sql)
        if shape in seen:
            continue
        seen.add(shape)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        print(f"-- {sql[:600]}{' …' if len(sql) > 600 else ''}\n{plan}\n", file=sys.stderr)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _measure(org_id: int) -> dict:
    from django.test import Client

    from audit import selectors
    from orgs.models import Organization, User

    org = Organization.objects.get(pk=org_id)
    admin = User.objects.get(email="bench-admin@customer.example")
    root = User.objects.get(email="bench-root@vendor.example")
    client = Client(SERVER_NAME="localhost")
    client.force_login(admin)
    url = f"/orgs/{org.pk}/audit/"
    figures: dict = {}

    # First page.
    first = _sample(client, url)
    figures["first_page_p95_ms"] = round(_p(first, 0.95), 1)
    figures["first_page_p50_ms"] = round(_p(first, 0.50), 1)
    _explain("first page", lambda: client.get(url))

    # Filtered pages: a mix of filters an admin combines.
    now = datetime.now(UTC)
    key_east = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{_key_uuid(org.pk, 1)}"
    some_request = (
        selectors.events_of(org).filter(event_name="Decrypt").values_list("request_id", flat=True)
    )[5000]
    cases = {
        "name+2days": {"event_name": "Decrypt", "from": _local(now - timedelta(days=2))},
        "errors_only": {"errors_only": "on"},
        "key+30days": {"resource": key_east, "from": _local(now - timedelta(days=30))},
        "region+week": {"region": "us-west-2", "from": _local(now - timedelta(days=7))},
        "principal+source": {"principal": ROLE_ARN, "event_source": "kms.amazonaws.com"},
        "request_id": {"request_id": some_request},
        "source+errors+week": {
            "event_source": "kms.amazonaws.com",
            "errors_only": "on",
            "from": _local(now - timedelta(days=7)),
        },
    }
    by_case, all_filtered = {}, []
    for label, data in cases.items():
        times = _sample(client, url, data, n=max(10, SAMPLES // 2))
        by_case[label] = round(_p(times, 0.95), 1)
        all_filtered += times
        _explain(f"filtered: {label}", lambda data=data: client.get(url, data))
    figures["filtered_p95_ms"] = round(_p(all_filtered, 0.95), 1)
    figures["filtered_p50_ms"] = round(_p(all_filtered, 0.50), 1)
    figures["filtered_p95_ms_by_case"] = by_case

    # Page 1,000: follow 999 "Older" cursors through the pagination function (what each
    # page's link carries, without rendering 999 pages), then load page 1,000 by its link.
    from audit.filters import AuditFilters
    from audit.pagination import decode_cursor, keyset_page
    from audit.views import PAGE_SIZE

    walk_started = time.perf_counter()
    events = selectors.search_events(org=org, filters=AuditFilters())
    page = keyset_page(events, size=PAGE_SIZE)  # page 1
    for _page in range(DEEP_PAGE - 2):  # pages 2 … 999
        page = keyset_page(events, size=PAGE_SIZE, after=decode_cursor(page.older_cursor))
    walk_s = time.perf_counter() - walk_started
    log(f"followed {DEEP_PAGE - 2} Older cursors (pages 1 … 999) in {walk_s:.1f} s")
    figures["deep_walk_ms_per_page"] = round(walk_s * 1000 / (DEEP_PAGE - 1), 2)
    deep_url = f"{url}?{urlencode({'after': page.older_cursor})}"  # page 999's "Older" link
    deep = _sample(client, deep_url)
    figures["deep_page_p95_ms"] = round(_p(deep, 0.95), 1)
    figures["deep_page_p50_ms"] = round(_p(deep, 0.50), 1)
    _explain("page 1,000", lambda: client.get(deep_url))
    _check_deep_page(client, deep_url, org)

    # The Django admin's changelist, as a superuser.
    root_client = Client(SERVER_NAME="localhost")
    _login_staff(root_client, root)
    admin_url = "/admin/audit/auditevent/"
    probe, _response = _timed_get(root_client, admin_url)
    admin_samples = max(5, SAMPLES // 2) if probe < 1000 else 5
    changelist = _sample(root_client, admin_url, n=admin_samples, warmup=1)
    figures["admin_changelist_p95_ms"] = round(_p(changelist, 0.95), 1)
    figures["admin_changelist_p50_ms"] = round(_p(changelist, 0.50), 1)
    _explain("admin changelist", lambda: root_client.get(admin_url))
    figures["admin_changelist_proposed_p95_ms"] = _proposed_admin_p95(root_client, admin_url)

    figures.update(_export(client, url, org, "json"))
    figures.update(_export(client, url, org, "csv"))
    return figures


def _login_staff(client, user) -> None:
    """Vendor staff pass two-factor on every page: sign in with a verified session, the way
    the test suite does (``tests.support``), where the tree has two-factor."""
    try:
        from tests.support import login_staff
    except ImportError:
        client.force_login(user)
    else:
        login_staff(client, user)


def _proposed_admin_p95(client, url: str) -> float:
    """The changelist with the admin changes proposed for audit/admin.py (this process only):
    no full COUNT (an estimating paginator), no date hierarchy (DISTINCT years and MIN/MAX
    over every event), a fixed-choice source filter (no DISTINCT), newest recorded first (the
    primary key's index), and the record column left in the database."""
    import types

    from django.contrib import admin

    from audit.filters import EventSourceListFilter
    from audit.models import AuditEvent
    from audit.pagination import EstimatedCountPaginator

    # The admin's URLs are bound to the registered instance: change it, then put it back.
    model_admin = admin.site._registry[AuditEvent]
    original_get_queryset = model_admin.get_queryset
    proposed = {
        "paginator": EstimatedCountPaginator,
        "show_full_result_count": False,
        "date_hierarchy": None,
        "list_filter": ["kind", EventSourceListFilter],
        "ordering": ["-id"],
        "get_queryset": types.MethodType(
            lambda self, request: original_get_queryset(request).defer("record"), model_admin
        ),
    }
    for name, value in proposed.items():
        setattr(model_admin, name, value)
    try:
        times = _sample(client, url, n=max(10, SAMPLES // 2))
        _explain("admin changelist, proposed", lambda: client.get(url))
        by_kind = _sample(client, url, {"kind": "ingested"}, n=10)
        _explain(
            "admin changelist, proposed, kind=ingested",
            lambda: client.get(url, {"kind": "ingested"}),
        )
    finally:
        for name in proposed:
            delattr(model_admin, name)
    log(f"proposed admin changelist filtered by kind: p95 {_p(by_kind, 0.95):.1f} ms")
    return round(_p(times, 0.95), 1)


def _local(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M")


def _check_deep_page(client, url: str, org) -> None:
    """Page 1,000 by cursors starts where OFFSET 49,950 would (checked once, here only)."""
    from audit import selectors
    from audit.views import PAGE_SIZE

    response = client.get(url)
    first_id = re.search(r"/audit/events/([0-9a-f-]+)/", response.content.decode()).group(1)
    expected = selectors.events_of(org).values_list("event_id", flat=True)[
        (DEEP_PAGE - 1) * PAGE_SIZE
    ]
    if str(expected) != first_id:
        # Events recorded during the run (sign-ins, exports) shift OFFSET, not the cursor.
        log(f"note: page {DEEP_PAGE} starts at {first_id}, OFFSET says {expected}")


def _export(client, url: str, org, fmt: str) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from audit import selectors

    expected = selectors.chain_head_sequence(org=org)
    gc.collect()
    baseline = _rss_mb()
    samples: list[tuple[int, float]] = []  # (bytes so far, RSS)
    size = 0
    started = time.perf_counter()
    response = client.get(url, {"format": fmt})
    if not response.streaming:
        raise SystemExit("the export is not a streaming response")
    chunks = iter(response.streaming_content)
    with CaptureQueriesContext(connection) as captured:
        for chunk in chunks:  # the header and the first batches, for their plan
            size += len(chunk)
            if len(captured.captured_queries) >= 2:
                break
    for index, chunk in enumerate(chunks):
        size += len(chunk)
        if index % 10 == 0:
            samples.append((size, _rss_mb()))
    response.close()
    elapsed = time.perf_counter() - started
    samples.append((size, _rss_mb()))
    peak = max(rss for _size, rss in samples)
    at_10pct = next(rss for seen, rss in samples if seen >= size / 10)
    batch_sql = next(
        (q["sql"] for q in captured.captured_queries if "record" in q["sql"].lower()), None
    )
    if batch_sql:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + batch_sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        print(f"\n===== export {fmt}: one batch =====\n-- {batch_sql}\n{plan}\n", file=sys.stderr)
    prefix = "export" if fmt == "json" else "export_csv"
    return {
        f"{prefix}_events": expected,
        f"{prefix}_events_per_s": round(expected / elapsed),
        f"{prefix}_mb": round(size / 2**20, 1),
        f"{prefix}_s": round(elapsed, 1),
        f"{prefix}_peak_rss_mb": round(peak, 1),
        f"{prefix}_rss_growth_mb": round(peak - baseline, 1),
        f"{prefix}_rss_at_10pct_mb": round(at_10pct, 1),
    }
