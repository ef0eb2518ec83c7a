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
* ``reconcile_events_per_s`` — request IDs matched per second by
  ``integrations.reconcile.reconcile_imported_events``: trail records of the organization's own
  key-usage calls (``BENCH_AUDIT_RECONCILE_EVENTS``, default 20,000, the newest), matched by
  request ID over the org's indexes and their matches written, in a transaction rolled back
  afterwards (the seeded database is left as it was).
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
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from bench import setup_django
from bench._audit_seed import (
    ACCOUNT,
    DEFAULT_EVENTS,
    ORG_SHARE,
    ROLE_ARN,
    _database_exists,
    _key_uuid,
    _recreate_database,
    _require_postgres,
    _seed,
    _seed_marker,
    log,
)

SAMPLES = int(os.environ.get("BENCH_AUDIT_SAMPLES", "40"))
RECONCILE_EVENTS = int(os.environ.get("BENCH_AUDIT_RECONCILE_EVENTS", "20000"))
DEEP_PAGE = 1000


# --- database -------------------------------------------------------------------------------


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

# One row per generated event: ``g`` runs 1…total; every fifth row is the measured org's
# (slot 0), the others cycle over slots 1…40, interleaved in time like real traffic. ``h`` and
# ``e`` are cheap hashes of the row that pick its variant (5 % portal actions, 5 % ingested,
# the rest key usage; 1 % errors). Sequences are dense per chain and (chain, sequence) unique;
# prev_hash points at the previous link's hash, but hashes are not the SHA-256 of the record:
# verification is not what this benchmark measures. Only the measured org's records get their
# own eventTime / eventID / requestID (what an export of that org reads); the other orgs'
# rows carry their template record as it is: the same size on disk, a third of the CPU.


# Expressions for the columns the bench knows; any other column gets its model default.


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

    figures.update(_reconcile(org))
    figures.update(_export(client, url, org, "json"))
    figures.update(_export(client, url, org, "csv"))
    return figures


def _reconcile(org) -> dict:
    """``reconcile_events_per_s``: the customer's trail shows the org's newest key-usage calls;
    how fast are they matched by request ID (and their matches written)?

    The trail events are the org's seeded imported rows, given the records AWS would log for
    those calls (same request ID and operation): the matches need real rows to point at. All
    in one transaction, rolled back: the seeded database stays as it was.
    """
    import uuid

    from django.db import transaction

    from audit.models import AuditEvent
    from connections.models import ByokConnection
    from integrations.reconcile import reconcile_imported_events

    calls = list(
        AuditEvent.objects.filter(organization=org, kind=AuditEvent.Kind.KEY_USAGE)
        .order_by("-event_time", "-id")
        .values_list("request_id", "event_name", "event_source", "event_time")[:RECONCILE_EVENTS]
    )
    hosts = list(
        AuditEvent.objects.filter(organization=org, kind=AuditEvent.Kind.INGESTED)
        .order_by("-id")
        .values_list("pk", flat=True)[: len(calls)]
    )
    identity = {"type": "AssumedRole", "arn": ROLE_ARN, "accountId": ACCOUNT}
    events = [
        AuditEvent(
            pk=host,
            organization=org,
            kind=AuditEvent.Kind.INGESTED,
            event_id=uuid.uuid4(),
            event_time=moment,
            event_source=source,
            event_name=name,
            request_id=request_id,
            record={
                "eventSource": source,
                "eventName": name,
                "requestID": request_id,
                "userIdentity": identity,
                "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
        for host, (request_id, name, source, moment) in zip(hosts, calls, strict=False)
    ]
    with transaction.atomic():
        ByokConnection.objects.update_or_create(
            organization=org, defaults={"aws_account_id": ACCOUNT, "location": "us"}
        )
        started = time.perf_counter()
        result = reconcile_imported_events(org=org, events=events)
        elapsed = time.perf_counter() - started
        transaction.set_rollback(True)
    if result.confirmed != len(events):
        raise SystemExit(f"reconcile confirmed {result.confirmed} of {len(events)} calls")
    log(f"reconciled {len(events):,} trail events in {elapsed:.2f} s")
    return {
        "reconcile_events": len(events),
        "reconcile_s": round(elapsed, 2),
        "reconcile_events_per_s": round(len(events) / elapsed) if elapsed else None,
    }


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
