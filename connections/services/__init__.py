"""The kill switch and its way back: revoke, restore, expire, and the health monitor.

Revocation comes from three places and always ends the same way (connection revoked, every
BYOK app instance suspended, data-key caches purged, notices, an audit event):
- an org admin in the portal (``revoke_key_access``);
- the health monitor seeing a disabled / deleted / denied key (``check_connection_health``);
- the data plane getting a revoking error from KMS (``revoke_after_aws_refusal``).

Which states allow what, and the deadlines of timed states, come from ``connections.lifecycle``
(the table); this module never types a set of states. The health monitor (beat) enforces every
deadline of ``lifecycle.DEADLINES`` and sends the restore window's reminders, each once.

Re-encryption (``reencryption.job``): a revocation pauses a running job in the same
transaction; a verified restore ends ``active`` and the re-encryption app's receiver moves a
connection whose job was paused on to ``re-encrypting`` and resumes the job on commit; expiry
ends the job. While a
job runs, both key generations hold data, so restore checks and the monitor look at every
key still in use (``retired_at`` empty), not only the current ones.
"""

from connections.lifecycle import MONITORED_STATES
from connections.services._common import (
    CAUSE_TO_KEY_STATUS,
    KEY_GONE_STATUSES,
    REVOKED_KEY_STATES,
    SYSTEM_IDENTITY,
)
from connections.services.expire import (
    destroy_data_keys,
    enforce_deadlines,
    expire_overdue_connections,
    send_restore_window_reminders,
    time_out_stuck_restores,
)
from connections.services.monitor import (
    check_connection_health,
    check_connection_health_logged,
    enforce_monitor_deadlines,
    monitored_connection_ids,
    run_health_monitor,
)
from connections.services.restore import RestoreCheck, request_restore, verify_restore
from connections.services.revoke import (
    request_read_checks,
    revoke_after_aws_refusal,
    revoke_key_access,
)
from connections.services.scope_restore import (
    enforce_scope_deadlines,
    expire_overdue_scopes,
    restore_scope,
    verify_scope_restore,
)
from connections.services.scope_revoke import (
    InvalidScope,
    Scope,
    keys_for_period,
    revoke_scope,
    revoke_scope_after_customer_denial,
)

__all__ = [
    "CAUSE_TO_KEY_STATUS",
    "KEY_GONE_STATUSES",
    "MONITORED_STATES",
    "REVOKED_KEY_STATES",
    "SYSTEM_IDENTITY",
    "InvalidScope",
    "RestoreCheck",
    "Scope",
    "check_connection_health",
    "destroy_data_keys",
    "enforce_deadlines",
    "enforce_scope_deadlines",
    "expire_overdue_connections",
    "expire_overdue_scopes",
    "keys_for_period",
    "request_read_checks",
    "request_restore",
    "restore_scope",
    "revoke_after_aws_refusal",
    "revoke_key_access",
    "revoke_scope",
    "revoke_scope_after_customer_denial",
    "run_health_monitor",
    "check_connection_health_logged",
    "enforce_monitor_deadlines",
    "monitored_connection_ids",
    "send_restore_window_reminders",
    "time_out_stuck_restores",
    "verify_restore",
    "verify_scope_restore",
]
