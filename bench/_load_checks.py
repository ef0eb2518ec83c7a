"""The end-of-run checks of ``bench load`` (``python -m bench._load_checks <in.json>``, with the
load launch's environment): what the database says about the tasks and the audit log.

Input: the tokens of the read-check tasks (each one's ``AppReadCheck`` event carries its token
as ``requestID``), the crash drill's token and the number of read checks its one complete run
records, the revoked organization's id. Prints one JSON object:

* ``chain_gaps``: per hash chain, links missing between the chain's base and its head
  (``ChainHead.sequence``), summed; ``chain_head_mismatches``: chains whose newest link is
  not the head's sequence;
* ``read_checks_missing``: read-check tasks without their event;
* ``slow_task_events``: the crash drill task's ``AppReadCheck`` events (both runs);
* ``revoked_at``: when the revocation committed (the connection's ``revoked_at``, Unix time);
* ``kms_calls``: key-usage events (one per AWS call the portal made with a customer's role)
  between ``window[0]`` and ``window[1]`` (Unix times, the main run), by operation.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime


def check(spec: dict) -> dict:
    import django

    django.setup()
    from django.db.models import Count, Max, Min

    from audit.models import AuditEvent, ChainHead
    from connections.models import ByokConnection

    links = {
        row["chain"]: row
        for row in AuditEvent.objects.values("chain").annotate(
            n=Count("id"), low=Min("sequence"), high=Max("sequence")
        )
    }
    gaps = mismatches = 0
    for head in ChainHead.objects.all():
        row = links.get(head.chain, {"n": 0, "low": None, "high": None})
        expected = max(0, head.sequence - head.base_sequence + 1)
        gaps += max(0, expected - row["n"])
        if head.sequence and row["high"] != head.sequence:
            mismatches += 1
    tokens = spec["read_check_tokens"]
    found = set(
        AuditEvent.objects.filter(event_name="AppReadCheck", request_id__in=tokens).values_list(
            "request_id", flat=True
        )
    )
    slow_events = AuditEvent.objects.filter(
        event_name="AppReadCheck", request_id=spec.get("slow_token") or "-"
    ).count()
    connection = ByokConnection.objects.get(organization_id=spec["revoked_org"])
    start, end = (datetime.fromtimestamp(t, tz=UTC) for t in spec["window"])
    kms_calls = dict(
        AuditEvent.objects.filter(kind="key-usage", event_time__range=(start, end))
        .values_list("event_name")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {
        "audit_events": AuditEvent.objects.count(),
        "chains": len(links),
        "chain_gaps": gaps,
        "chain_head_mismatches": mismatches,
        "read_checks_missing": len(set(tokens) - found),
        "slow_task_events": slow_events,
        "revoked_state": connection.state,
        "kms_calls": kms_calls,
        "revoked_at": connection.revoked_at.timestamp() if connection.revoked_at else None,
    }


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:  # noqa: PTH123
        print(json.dumps(check(json.load(handle))))
