"""The portal's own Prometheus metrics (``byok_*``), defined once, here, for every app.

Each app increments these where things happen; ``byokportal/metrics.py`` serves them at
``/metrics`` with django-prometheus' request metrics and the gauges read from the database at
scrape time. docs/operations.md lists every metric with what to alert on.

Labels stay few and bounded: a trigger, an outcome, an operation, a named AWS cause (never a
raw error string, an org id, a key ARN or anything a customer typed). Under gunicorn and
Celery every process writes its values to ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode, chosen when the library is imported) and the scrape sums them; a gauge
says how (``multiprocess_mode``).
"""

from __future__ import annotations

import os
import time

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # A process that starts before the web server (a worker, beat) writes its values there from
    # the first metric defined below: the directory must exist by then.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
# No ``*_created`` series (a start time per counter): multiprocess mode has none either, so a
# scrape looks the same under gunicorn and in one process.
disable_created_metrics()

# --- The kill switch ----------------------------------------------------------------------

#: Who pulled it: the org admin, the health monitor (DescribeKey/AssumeRole refused), or a KMS
#: refusal seen by the data plane or a re-encryption job.
REVOCATION_TRIGGERS = ("admin", "monitor", "aws-refusal")
REVOCATIONS = Counter(
    "byok_revocations",
    "Revocations of key access: trigger (admin, monitor, aws-refusal) and outcome (revoked; "
    "refused: not revocable now; unchanged: already revoked; error).",
    ["trigger", "outcome"],
)
REVOCATION_SECONDS = Histogram(
    "byok_revocation_duration_seconds",
    "How long a revocation took in the revoking process: lock, state change, apps suspended, "
    "audit event, commit.",
    ["trigger"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REVOCATION_PROPAGATION_SECONDS = Histogram(
    "byok_revocation_propagation_seconds",
    "From a connection's revocation (its state change) until a process that was using the "
    "org's data keys refused them (its access guard saw the new state): the kill switch's "
    "latency in each web and worker process.",
    buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)


def revocation_done(trigger: str, outcome: str, started: float | None = None) -> None:
    """Count one revocation attempt; ``started`` (``time.perf_counter()``) times it."""
    REVOCATIONS.labels(trigger=trigger, outcome=outcome).inc()
    if started is not None:
        REVOCATION_SECONDS.labels(trigger=trigger).observe(time.perf_counter() - started)


# --- The data-key cache -------------------------------------------------------------------

DEK_CACHE_LOOKUPS = Counter(
    "byok_dek_cache_lookups",
    "Uses of a data key by the data plane: hit (served from the process's cache) or miss (the "
    "key was unwrapped or created with KMS, then cached). Hits are exported per lease "
    "(at most DEK_GUARD_TTL_S late), not per use.",
    ["result"],
)
DEK_CACHE_HITS = DEK_CACHE_LOOKUPS.labels(result="hit")
DEK_CACHE_MISSES = DEK_CACHE_LOOKUPS.labels(result="miss")

# --- AWS (KMS and STS calls made with the customer's role) ---------------------------------

AWS_CALLS = Counter(
    "byok_aws_calls",
    "Calls to AWS with a customer's role, retries included in one call: service (kms, sts), "
    "operation (Decrypt, GenerateDataKey, DescribeKey, AssumeRole ...) and outcome (ok, or "
    "the named cause: throttled, unreachable, key-disabled, access-denied ...).",
    ["service", "operation", "outcome"],
)
AWS_CALL_SECONDS = Histogram(
    "byok_aws_call_duration_seconds",
    "Duration of a call to AWS with a customer's role, retries included.",
    ["service", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
AWS_RETRIED_ATTEMPTS = Counter(
    "byok_aws_retried_attempts",
    "Attempts AWS answered with an error that botocore then retried (throttling, 5xx).",
    ["service", "operation"],
)


def aws_call_done(
    service: str, operation: str, cause: str | None, started: float, retried: int = 0
) -> None:
    """Count one AWS call: ``cause`` is ``None`` when it succeeded, else its named cause."""
    AWS_CALLS.labels(service=service, operation=operation, outcome=cause or "ok").inc()
    AWS_CALL_SECONDS.labels(service=service, operation=operation).observe(
        time.perf_counter() - started
    )
    if retried:
        AWS_RETRIED_ATTEMPTS.labels(service=service, operation=operation).inc(retried)


# --- The health monitor ---------------------------------------------------------------------

HEALTH_OUTCOMES = ("healthy", "transient", "revoked", "not-usable", "error")
HEALTH_CHECKS = Counter(
    "byok_health_checks",
    "Health checks of a connection's keys: healthy, transient (AWS throttled or unreachable), "
    "revoked (the check revoked it), not-usable (already revoked or restoring: only the "
    "customer's side was looked at), error (the check itself failed).",
    ["outcome"],
)
HEALTH_MONITOR_LAST_RUN = Gauge(
    "byok_health_monitor_last_run_timestamp_seconds",
    "When the health monitor (beat) last finished a run, as a Unix time.",
    multiprocess_mode="max",
)

# --- CloudTrail ingestion -------------------------------------------------------------------

CLOUDTRAIL_IMPORTS = Counter(
    "byok_cloudtrail_imports",
    "Import runs of a customer's CloudTrail source: ok, or error (recorded on the source).",
    ["outcome"],
)
CLOUDTRAIL_RECORDS = Counter(
    "byok_cloudtrail_records_imported",
    "CloudTrail records imported from customers' trails.",
)

# --- SIEM webhooks --------------------------------------------------------------------------

WEBHOOK_OUTCOMES = ("delivered", "retry", "failed")
WEBHOOK_ATTEMPTS = Counter(
    "byok_webhook_attempts",
    "Webhook delivery attempts: delivered, retry (failed, tried again later) or failed (gave "
    "up: last attempt, or a permanent refusal; shown to the org admin).",
    ["outcome"],
)

# --- Audit chains ---------------------------------------------------------------------------

AUDIT_CHAIN_VERIFICATIONS = Counter(
    "byok_audit_chain_verifications",
    "Audit chain verifications: kind (full: every link and signed digest; digest: the links "
    "added since the last digest, before signing) and result (ok, broken).",
    ["kind", "result"],
)
AUDIT_CHAINS_BROKEN = Gauge(
    "byok_audit_chains_broken",
    "Broken audit chains found by the last full verification of every chain (daily).",
    multiprocess_mode="mostrecent",
)
AUDIT_CHAINS_LAST_VERIFIED = Gauge(
    "byok_audit_chains_last_verified_timestamp_seconds",
    "When every audit chain was last fully verified, as a Unix time.",
    multiprocess_mode="max",
)


def chain_verified(kind: str, *, broken: bool) -> None:
    AUDIT_CHAIN_VERIFICATIONS.labels(kind=kind, result="broken" if broken else "ok").inc()


# Known label values start at 0, so a rate or an alert has a series before the first event.
for _trigger in REVOCATION_TRIGGERS:
    for _outcome in ("revoked", "refused", "unchanged", "error"):
        REVOCATIONS.labels(trigger=_trigger, outcome=_outcome)
for _outcome in HEALTH_OUTCOMES:
    HEALTH_CHECKS.labels(outcome=_outcome)
for _outcome in ("ok", "error"):
    CLOUDTRAIL_IMPORTS.labels(outcome=_outcome)
for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOK_ATTEMPTS.labels(outcome=_outcome)
for _kind in ("full", "digest"):
    for _result in ("ok", "broken"):
        AUDIT_CHAIN_VERIFICATIONS.labels(kind=_kind, result=_result)
