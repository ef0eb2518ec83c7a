"""Celery entry points of the audit app: thin, idempotent wrappers over services (acks late).

Beat (settings ``CELERY_BEAT_SCHEDULE``): CloudTrail import every few minutes, the webhook
sweeper every minute, signed digests hourly, chain verification and retention daily.
"""

import logging

from celery import shared_task

from audit import digests, ingestion, retention, webhooks

log = logging.getLogger(__name__)


def _positive_id(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive integer id, got {value!r}")
    return value


# --- Ingestion ----------------------------------------------------------------------------------


@shared_task(acks_late=True)
def ingest_all_cloudtrail() -> list[int]:
    """Beat: queue an import of every enabled CloudTrail source."""
    return ingestion.ingest_all()


@shared_task(acks_late=True)
def ingest_cloudtrail_task(source_id: int) -> dict:
    """Import new log files of one source. Failures are recorded on the source; the next beat
    run retries them (files already imported are not read again)."""
    run = ingestion.ingest_source(source_id=_positive_id(source_id))
    return {
        "imported": run.files_imported,
        "skipped": run.files_skipped,
        "malformed": run.files_malformed,
        "records": run.records_imported,
        "error": run.error,
    }


# --- SIEM delivery ----------------------------------------------------------------------------


@shared_task(bind=True, acks_late=True, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> str:
    """One attempt; on failure a retry after the backoff (the database counts attempts)."""
    delivery_id = _positive_id(delivery_id)
    result = webhooks.attempt_delivery(delivery_id=delivery_id)
    while result.retry_in is not None and self.request.is_eager:
        # Run eagerly (CELERY_TASK_ALWAYS_EAGER) there is no broker to hold a countdown.
        result = webhooks.attempt_delivery(delivery_id=delivery_id)
    if result.retry_in is not None:
        raise self.retry(countdown=result.retry_in)
    return result.status


@shared_task(acks_late=True)
def sweep_webhook_deliveries() -> dict:
    return webhooks.sweep_deliveries()


# --- Trust ------------------------------------------------------------------------------------


@shared_task(acks_late=True)
def sign_chain_digests() -> dict:
    """Hourly: sign the head of every chain that moved. Idempotent (one digest per link)."""
    try:
        run = digests.sign_chain_digests()
    except digests.SigningKeyMissing as exc:
        log.error("%s", exc)
        return {"error": str(exc)}
    return {
        "signed": len(run.signed),
        "unchanged": run.unchanged,
        "breaks": [str(b) for b in run.breaks],
    }


@shared_task(acks_late=True)
def verify_audit_chains() -> dict:
    """Daily: verify every chain; staff are alerted on a break."""
    breaks = digests.verify_and_alert()
    return {"breaks": [str(b) for b in breaks]}


@shared_task(acks_late=True)
def purge_expired_audit_events() -> dict:
    """Daily: retention (the only deletion of audit events), audited in each chain."""
    deleted: dict[str, int] = {}
    for result in retention.purge_expired_events():
        deleted[result.chain] = deleted.get(result.chain, 0) + result.deleted
    return deleted
