"""Celery entry points of the audit app: thin, idempotent wrappers over services (acks late).

Beat (settings ``CELERY_BEAT_SCHEDULE``): the webhook
sweeper every minute, signed digests hourly, chain verification and retention daily.
"""

import logging

from celery import shared_task

from audit import digests, retention, webhooks
from audit.services import record_event
from core.tasks import positive_id

log = logging.getLogger(__name__)


# --- SIEM delivery ----------------------------------------------------------------------------


@shared_task(bind=True, acks_late=True, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> str:
    """One attempt; on failure a retry after the backoff (the database counts attempts)."""
    delivery_id = positive_id(delivery_id)
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


@shared_task(acks_late=True)
def record_heartbeat(note: str) -> str:
    """Proves a worker can reach the database: records a ``WorkerHeartbeat`` vendor event."""
    if not isinstance(note, str) or len(note) > 200:
        raise ValueError("note must be a string of at most 200 characters")
    record_event(
        event_name="WorkerHeartbeat",
        user_identity={"type": "AWSService", "invokedBy": "byok-portal-worker"},
        request_parameters={"note": note},
        read_only=True,
    )
    return note
