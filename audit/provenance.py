"""Where an audit event came from: recorded by the portal, or imported from the customer's trail.

Imported CloudTrail records are kept as the customer's trail wrote them (they are hashed into
the chain as such), so their provenance travels beside the record, never inside it: in the
list and detail pages, the CSV column, the JSON export's ``Chain`` entries and the webhook
payload.
"""

from __future__ import annotations

PORTAL = "portal"
KEY_USAGE = "vendor-key-usage"
CUSTOMER_TRAIL = "customer-cloudtrail"

_LABELS = {
    PORTAL: "Recorded by the portal",
    KEY_USAGE: "Recorded by the portal (the vendor's call to your AWS account)",
    CUSTOMER_TRAIL: "Imported from your CloudTrail",
}


def origin_of(kind: str) -> str:
    """``AuditEvent.kind`` → the provenance origin."""
    return {"key-usage": KEY_USAGE, "ingested": CUSTOMER_TRAIL}.get(kind, PORTAL)


def provenance_of(*, kind: str, imported_from: str = "") -> dict:
    """The provenance object of an event, as exports and webhook payloads carry it."""
    origin = origin_of(kind)
    provenance = {"origin": origin, "recordedByVendor": origin != CUSTOMER_TRAIL}
    if origin == CUSTOMER_TRAIL:
        provenance["importedFrom"] = imported_from
    return provenance


def provenance_label(*, kind: str, imported_from: str = "") -> str:
    """One line for people: the list, the detail page and the CSV."""
    origin = origin_of(kind)
    label = _LABELS[origin]
    if origin == CUSTOMER_TRAIL and imported_from:
        return f"{label} ({imported_from})"
    return label
