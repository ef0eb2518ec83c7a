"""The vendor's record of its calls, confirmed by the customer's own CloudTrail.

Stub: the reconciliation helper fills this in. ``integrations.ingestion.import_records``
calls :func:`reconcile_imported_events` inside its transaction with the events it just
imported.
"""

from __future__ import annotations


def reconcile_imported_events(*, org, events) -> None:
    """Match the imported events made with the vendor's role against the portal's records."""
    return None
