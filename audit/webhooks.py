"""SIEM delivery: every event of an organization POSTed to its webhook, signed, with retries.

Each event is sent as CloudTrail JSON with its provenance beside the record::

    {"Records": [<the record>],
     "Provenance": [{"eventID": ..., "origin": ..., "recordedByVendor": ..., "importedFrom": ...}]}

``Records`` is the shape of a CloudTrail log file, so SIEM parsers for CloudTrail take it as
is; ``Provenance`` (``audit.provenance``) tells a portal action from a record imported from
the customer's own trail, which keeps what that trail wrote (even a forged vendor identity).

Requests are signed the Standard Webhooks way (``audit.webhook_signing``: ``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64>``), so receivers verify them with an
off-the-shelf library; docs/siem-webhooks.md is the receiver's guide. Delivery is at least
once: receivers dedupe on ``webhook-id``.

Reliability: an event's delivery row is written in the event's own transaction (a
``post_save`` receiver, connected when this module is imported) and a Celery task sends it
once that commits. A failed attempt is retried with exponential backoff (``AUDIT_WEBHOOK_*``); after
the last attempt the delivery is marked failed and shown on the integrations page, where the
admin can retry it. A sweeper (beat, every minute) creates deliveries the hook missed — by a
per-webhook cursor over the org's chain, whose sequence numbers commit in order — and re-sends
deliveries whose retry got lost.

Destinations (``audit.webhook_transport``): https only (plain http and loopback only with
``AUDIT_WEBHOOK_ALLOW_LOOPBACK``); every address the name resolves to is checked against
private ranges (also the IPv4 address a NAT64, 6to4 or mapped IPv6 address carries) and the
request goes to the checked address, never through a second look-up. Redirects are not
followed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.db.models.signals import post_save
from django.utils import timezone

from audit import webhook_transport
from audit.chain import chain_name_for
from audit.models import AuditEvent, ChainHead, WebhookDelivery, WebhookEndpoint
from audit.provenance import provenance_of
from audit.services import record_event
from audit.webhook_signing import decrypt_secret, encrypt_secret, signed_headers
from audit.webhook_transport import DestinationRefused, PostOutcome
from core import metrics
from core.errors import NotAllowed, NotFound
from core.tasks import enqueue, enqueue_on_commit

log = logging.getLogger(__name__)

#: A pending delivery whose attempt is this late is assumed lost and sent again.
STALE_AFTER = timedelta(minutes=5)
SWEEP_BATCH = 1000
TEST_EVENT_NAME = "SendWebhookTestEvent"


class DeliveryNotFound(NotFound):
    """No such delivery in the caller's organization."""


class WebhookRefused(NotAllowed):
    """A webhook setting or action the portal refuses; the message is for the org admin."""


def validate_webhook_url(url: str) -> str:
    """The URL if deliveries may go there; :class:`WebhookRefused` with the reason otherwise."""
    try:
        webhook_transport.parse_destination(url)
    except DestinationRefused as exc:
        raise WebhookRefused(str(exc)) from exc
    return (url or "").strip()


def message_id_for(delivery_id: int) -> str:
    """``webhook-id``: one per delivery, the same on every retry."""
    return f"msg_{delivery_id}"


def payload_for(event: AuditEvent) -> bytes:
    """The body: the record as recorded, and its provenance beside it (never inside it)."""
    provenance = {
        "eventID": str(event.event_id),
        **provenance_of(kind=event.kind, imported_from=event.imported_from),
    }
    body = {"Records": [event.record], "Provenance": [provenance]}
    return json.dumps(body, separators=(",", ":")).encode()


# --- Tenant-scoped reads ---------------------------------------------------------------------


def endpoint_of(org) -> WebhookEndpoint | None:
    return WebhookEndpoint.objects.filter(organization=org).first()


def recent_deliveries_of(org, *, limit: int = 50) -> list[WebhookDelivery]:
    return list(
        WebhookDelivery.objects.filter(endpoint__organization=org)
        .select_related("event")
        .order_by("-id")[:limit]
    )


# --- Configuration (org admin) ----------------------------------------------------------------


@transaction.atomic
def configure_webhook(
    *, org, actor, url: str, secret: str = "", enabled: bool = True, source_ip: str = ""
) -> WebhookEndpoint:
    """Create or change the org's webhook. An empty ``secret`` keeps the current one."""
    url = validate_webhook_url(url)
    endpoint = (
        WebhookEndpoint.objects.select_for_update(no_key=True).filter(organization=org).first()
    )
    now = timezone.now()
    created = endpoint is None
    if created:
        if not secret:
            raise WebhookRefused("Enter a shared secret.")
        head = ChainHead.objects.filter(chain=chain_name_for(org.pk)).first()
        start = head.sequence if head else 0
        endpoint = WebhookEndpoint(organization=org, start_sequence=start, swept_sequence=start)
    endpoint.url = url
    endpoint.enabled = enabled
    if secret:
        endpoint.secret_encrypted = encrypt_secret(secret)
        endpoint.secret_set_at = now
    endpoint.save()
    forget_webhook_orgs()
    record_event(
        org=org,
        actor=actor,
        event_name="PutWebhookConfiguration",
        source_ip=source_ip,
        # Never the secret: only that it changed.
        request_parameters={"url": url, "enabled": enabled, "secretChanged": bool(secret)},
        response_elements={"created": created},
    )
    return endpoint


@transaction.atomic
def remove_webhook(*, org, actor, source_ip: str = "") -> None:
    endpoint = (
        WebhookEndpoint.objects.select_for_update(no_key=True).filter(organization=org).first()
    )
    if endpoint is None:
        raise WebhookRefused("There is no webhook to remove.")
    url = endpoint.url
    endpoint.delete()  # and its delivery log
    forget_webhook_orgs()
    record_event(
        org=org,
        actor=actor,
        event_name="DeleteWebhookConfiguration",
        source_ip=source_ip,
        request_parameters={"url": url},
    )


@transaction.atomic
def send_test_event(*, org, actor, source_ip: str = "") -> WebhookDelivery:
    """Record a test event (an audited portal action) and deliver it like any other."""
    endpoint = WebhookEndpoint.objects.filter(organization=org).first()
    if endpoint is None:
        raise WebhookRefused("Save a webhook first.")
    if not endpoint.enabled:
        raise WebhookRefused("The webhook is paused: enable it to send a test event.")
    event = record_event(
        org=org,
        actor=actor,
        event_name=TEST_EVENT_NAME,
        source_ip=source_ip,
        request_parameters={"url": endpoint.url},
    )
    delivery = enqueue_delivery(event)
    if delivery is None:  # cannot happen: the endpoint is enabled and the event is new
        raise WebhookRefused("The test event could not be queued.")
    return delivery


@transaction.atomic
def retry_delivery(*, org, actor, delivery_id: int, source_ip: str = "") -> WebhookDelivery:
    delivery = (
        WebhookDelivery.objects.select_for_update(no_key=True)
        .filter(endpoint__organization=org, pk=delivery_id)
        .first()
    )
    if delivery is None:
        raise DeliveryNotFound("No such delivery.")
    if delivery.status != WebhookDelivery.Status.FAILED:
        raise WebhookRefused("Only a failed delivery can be retried.")
    delivery.status = WebhookDelivery.Status.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = None
    delivery.save(update_fields=["status", "attempts", "next_attempt_at"])
    record_event(
        org=org,
        actor=actor,
        event_name="RetryWebhookDelivery",
        source_ip=source_ip,
        request_parameters={"deliveryId": delivery.pk, "eventId": str(delivery.event.event_id)},
    )
    _send_later(delivery.pk)
    return delivery


# --- Enqueueing ---------------------------------------------------------------------------------


def enqueue_delivery(event: AuditEvent) -> WebhookDelivery | None:
    """The delivery of one recorded event, if its org has an enabled webhook; sent on commit.

    Called in the event's own transaction (an outbox: the delivery row commits with the
    event, or not at all). Idempotent: an event gets one delivery per webhook, whoever asks
    first (the hook, the sweeper or a test event).
    """
    if event.organization_id is None:
        return None
    endpoint = WebhookEndpoint.objects.filter(
        organization_id=event.organization_id, enabled=True
    ).first()
    if endpoint is None or event.sequence <= endpoint.start_sequence:
        return None
    delivery, created = WebhookDelivery.objects.get_or_create(endpoint=endpoint, event=event)
    if created:
        _send_later(delivery.pk)
    return delivery


def _send_later(delivery_id: int) -> None:
    # robust: a broker hiccup must not fail the caller's committed work (the sweeper resends).
    enqueue_on_commit("audit.tasks.deliver_webhook", delivery_id, robust=True)


# Which orgs have an enabled webhook, per process, for a few seconds: recording an event of an
# org without one (nearly all of them) costs no query and no on-commit callback. A process
# that has not seen a new webhook yet leaves its events to the sweeper (within a minute).
_WEBHOOK_ORGS: dict = {"ids": frozenset(), "loaded_at": None}
_WEBHOOK_ORGS_LOCK = threading.Lock()


def _orgs_with_webhooks() -> frozenset[int]:
    now = time.monotonic()
    with _WEBHOOK_ORGS_LOCK:
        loaded_at = _WEBHOOK_ORGS["loaded_at"]
        if loaded_at is not None and now - loaded_at < settings.AUDIT_WEBHOOK_ORG_CACHE_S:
            return _WEBHOOK_ORGS["ids"]
    ids = frozenset(
        WebhookEndpoint.objects.filter(enabled=True).values_list("organization_id", flat=True)
    )
    with _WEBHOOK_ORGS_LOCK:
        _WEBHOOK_ORGS.update(ids=ids, loaded_at=now)
    return ids


def forget_webhook_orgs() -> None:
    with _WEBHOOK_ORGS_LOCK:
        _WEBHOOK_ORGS.update(ids=frozenset(), loaded_at=None)


def _on_event_saved(sender, instance: AuditEvent, created: bool, raw: bool = False, **kwargs):
    if not created or raw or instance.organization_id is None:
        return
    if instance.organization_id not in _orgs_with_webhooks():
        return
    try:
        with transaction.atomic():  # a savepoint: a failure here never undoes the event
            enqueue_delivery(instance)
    except DatabaseError:
        log.exception("Could not queue the webhook delivery of event %s", instance.pk)


post_save.connect(
    _on_event_saved, sender=AuditEvent, dispatch_uid="audit.webhooks.enqueue_delivery"
)


# --- Delivering ---------------------------------------------------------------------------------


def backoff_seconds(attempt: int) -> float:
    """The wait after failed attempt ``attempt`` (1-based): base × 2^(attempt−1), capped."""
    base = settings.AUDIT_WEBHOOK_BACKOFF_BASE_S
    return min(settings.AUDIT_WEBHOOK_BACKOFF_MAX_S, base * 2 ** max(0, attempt - 1))


@dataclass(frozen=True)
class AttemptResult:
    status: str
    retry_in: float | None = None


def attempt_delivery(*, delivery_id: int) -> AttemptResult:
    """One attempt of one delivery; says whether (and when) to try again. Idempotent."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",), no_key=True)
            .select_related("endpoint", "event")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
            return AttemptResult(delivery.status if delivery else "gone")
        endpoint = delivery.endpoint
        if not endpoint.enabled:
            return AttemptResult("paused")  # the sweeper resumes it once enabled again
        delivery.attempts += 1
        delivery.last_attempt_at = timezone.now()
        delivery.save(update_fields=["attempts", "last_attempt_at"])
        attempt = delivery.attempts
        url, token = endpoint.url, endpoint.secret_encrypted
        event = delivery.event
    try:
        secret = decrypt_secret(token)
    except InvalidToken:
        outcome = PostOutcome(
            False,
            None,
            "The stored secret cannot be decrypted (the portal's key changed): "
            "enter the secret again.",
            permanent=True,
        )
    else:
        body = payload_for(event)
        # Signed afresh per attempt (receivers refuse old timestamps); same id every time.
        headers = signed_headers(
            secret=secret,
            message_id=message_id_for(delivery_id),
            timestamp=int(time.time()),
            body=body,
        )
        outcome = webhook_transport.post(url=url, body=body, headers=headers)
    result = _record_outcome(delivery_id, attempt, outcome)
    if result.status != "gone":
        counted = (
            "delivered" if outcome.ok else "retry" if result.retry_in is not None else "failed"
        )
        metrics.WEBHOOK_ATTEMPTS.labels(outcome=counted).inc()
    return result


@transaction.atomic
def _record_outcome(delivery_id: int, attempt: int, outcome: PostOutcome) -> AttemptResult:
    delivery = WebhookDelivery.objects.select_for_update(no_key=True).filter(pk=delivery_id).first()
    if delivery is None:
        return AttemptResult("gone")
    now = timezone.now()
    retry_in = None
    if outcome.ok:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
    elif outcome.permanent or attempt >= settings.AUDIT_WEBHOOK_MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.next_attempt_at = None
    else:
        retry_in = backoff_seconds(attempt)
        delivery.next_attempt_at = now + timedelta(seconds=retry_in)
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error[:500]
    delivery.history = [
        *delivery.history[-(settings.AUDIT_WEBHOOK_MAX_ATTEMPTS * 2) :],
        {
            "attempt": attempt,
            "at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "statusCode": outcome.status_code,
            "error": outcome.error[:200],
            "retryInS": retry_in,
        },
    ]
    delivery.save()
    return AttemptResult(delivery.status, retry_in)


def sweep_deliveries(*, now: datetime | None = None) -> dict:
    """Beat: create deliveries the commit hook missed, and re-send lost retries."""
    now = now or timezone.now()
    created = resent = 0
    for endpoint in WebhookEndpoint.objects.filter(enabled=True):
        start = max(endpoint.start_sequence, endpoint.swept_sequence)
        events = list(
            AuditEvent.objects.filter(
                chain=chain_name_for(endpoint.organization_id), sequence__gt=start
            )
            .order_by("sequence")
            .values_list("pk", "sequence")[:SWEEP_BATCH]
        )
        if not events:
            continue
        have = set(
            WebhookDelivery.objects.filter(
                endpoint=endpoint, event_id__in=[pk for pk, _ in events]
            ).values_list("event_id", flat=True)
        )
        for pk, _sequence in events:
            if pk in have:
                continue
            delivery, was_created = WebhookDelivery.objects.get_or_create(
                endpoint=endpoint, event_id=pk
            )
            if was_created:
                created += 1
                _send_later(delivery.pk)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(swept_sequence=events[-1][1])
    lost = WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, endpoint__enabled=True
    ).filter(
        Q(next_attempt_at__lt=now - STALE_AFTER)
        | Q(next_attempt_at__isnull=True, created_at__lt=now - STALE_AFTER)
    )
    for delivery_id in lost.values_list("pk", flat=True)[:SWEEP_BATCH]:
        resent += 1
        enqueue("audit.tasks.deliver_webhook", delivery_id)
    return {"created": created, "resent": resent}
