"""Seeding for ``bench audit``: a PostgreSQL database of millions of CloudTrail-format events,
loaded in parallel with set-based SQL (split from bench/audit.py, which measures)."""

from __future__ import annotations

import re
import sys
import threading
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

DEFAULT_EVENTS = 5_000_000
ORG_SHARE = 5  # one event in five belongs to the measured organization
OTHER_GROUPS = 10  # other orgs: 4 × 10 = 40
SPAN_DAYS = 365
CHUNK = 500_000
LOADERS = 2
SEED_VERSION = 4  # 3: hourly event and reconciliation counts (audit.counts); 4: EventVolume
ACCOUNT = "111122223333"
ROLE_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/byok-key-management/byok-portal"
PASSWORD = "bench-audit-pass"  # noqa: S105 - a throw-away local benchmark database


def log(message: str) -> None:
    print(f"[bench audit] {message}", file=sys.stderr, flush=True)


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
    "imported_from": (
        "CASE WHEN tpl.kind = 'ingested' "
        "THEN 's3://bench-trail/AWSLogs/' || o.org_id || '/CloudTrail.json.gz' ELSE '' END"
    ),
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

    # Chains written through record_event while seeding (the vendor chain audits the bench's
    # staff users) have their head already.
    recorded = set(ChainHead.objects.values_list("chain", flat=True))
    ChainHead.objects.bulk_create(
        ChainHead(chain=chain, sequence=sequence, head_hash=head_hash)
        for chain, sequence, head_hash in _chain_heads()
        if chain not in recorded
    )
    # The hourly counts record_event keeps, for the bulk-loaded rows: one aggregate.
    counts_started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_eventcount")
        cursor.execute(
            "INSERT INTO audit_eventcount (organization_id, hour, total, errors, key_usage, "
            "confirmed, unexplained) "
            "SELECT organization_id, date_trunc('hour', event_time AT TIME ZONE 'UTC') "
            "AT TIME ZONE 'UTC', count(*), count(*) FILTER (WHERE error_code <> ''), "
            "count(*) FILTER (WHERE kind = 'key-usage'), 0, 0 FROM audit_auditevent "
            "WHERE organization_id IS NOT NULL GROUP BY 1, 2"
        )
        # …and by filter columns (audit.volume; the digest is volume.dims_of's, in SQL).
        cursor.execute("DELETE FROM audit_eventvolume")
        cursor.execute(
            "INSERT INTO audit_eventvolume (organization_id, hour, dims, event_name, "
            "event_source, principal, key_arn, aws_region, total, errors) "
            "SELECT organization_id, date_trunc('hour', event_time AT TIME ZONE 'UTC') "
            "AT TIME ZONE 'UTC', md5(concat_ws(chr(31), event_name, event_source, principal, "
            "key_arn, aws_region)), event_name, event_source, principal, key_arn, aws_region, "
            "count(*), count(*) FILTER (WHERE error_code <> '') FROM audit_auditevent "
            "WHERE organization_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
        )
    log(f"  hourly counts in {time.perf_counter() - counts_started:.1f} s")
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
