"""Re-encryption requests' business actions, by sub-domain:

- :mod:`.requests`: the admin's request and cancellation, the rep's claim, reject and approval,
  and their notices;
- :mod:`.preflight`: the preflight of the new keys.

Every name used elsewhere is re-exported, so ``from reencryption import services;
services.X`` and ``from reencryption.services import X`` keep working.
"""

from reencryption.services.preflight import (
    PREFLIGHT_WORKER,
    execute_reencryption_preflight,
    start_reencryption_preflight,
)
from reencryption.services.requests import (
    KEY_ARN_RE,
    MAX_WINDOW_AHEAD,
    ReencryptionRefused,
    approve_reencryption_request,
    cancel_reencryption_request,
    claim_reencryption_request,
    key_arn_problem,
    key_arn_problems,
    parse_key_arn,
    passing_preflight,
    reject_reencryption_request,
    request_reencryption,
)

__all__ = [
    "KEY_ARN_RE",
    "MAX_WINDOW_AHEAD",
    "PREFLIGHT_WORKER",
    "ReencryptionRefused",
    "approve_reencryption_request",
    "cancel_reencryption_request",
    "claim_reencryption_request",
    "execute_reencryption_preflight",
    "key_arn_problem",
    "key_arn_problems",
    "parse_key_arn",
    "passing_preflight",
    "reject_reencryption_request",
    "request_reencryption",
    "start_reencryption_preflight",
]
