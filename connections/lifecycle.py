"""The BYOK connection state machine: the only table of allowed transitions.

pending → active → revoked → (restoring → active) | expired;
active → re-encrypting → active; active ↔ degraded (transient AWS failures).

Re-encryption and the kill switch (keys/reencryption_job.py):

* ``active → re-encrypting``: the job switches to the new keys (one transaction).
* ``re-encrypting → active``: the job retired the old keys, or failed (both keys stay in use).
* ``re-encrypting → revoked``: revoke stays available during a job; the job pauses.
* ``restoring → re-encrypting``: restore of a connection whose job was paused by the
  revocation: the data is under two generations of keys until the job finishes, so the
  connection goes back to re-encrypting (never to active with a paused job) and the job
  resumes from its checkpoint. Without a paused job, restore ends ``active`` as before.
* No ``re-encrypting → degraded``: a job rides out transient AWS failures itself (retries,
  then the sweeper), and ``degraded → active`` would lose the fact that a job is running.
"""

from django.utils import timezone

from connections.models import ByokConnection, ConnectionState
from core.errors import NotAllowed

S = ConnectionState

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.ACTIVE}),
    S.ACTIVE: frozenset({S.DEGRADED, S.REVOKED, S.REENCRYPTING}),
    S.DEGRADED: frozenset({S.ACTIVE, S.REVOKED}),
    S.REENCRYPTING: frozenset({S.ACTIVE, S.REVOKED}),
    S.REVOKED: frozenset({S.RESTORING, S.EXPIRED}),
    S.RESTORING: frozenset({S.ACTIVE, S.REENCRYPTING, S.REVOKED, S.EXPIRED}),
    S.EXPIRED: frozenset(),
}

#: States in which app data may be read and written with the customer's keys.
USABLE_STATES = frozenset({S.ACTIVE, S.DEGRADED, S.REENCRYPTING})


class TransitionNotAllowed(NotAllowed):
    """A state change the state machine refuses; the message is written for the customer."""


def can_transition(current: str, target: str) -> bool:
    return target in ALLOWED_TRANSITIONS.get(current, frozenset())


def transition(connection: ByokConnection, target: str, *, reason: str = "") -> ByokConnection:
    """Move a (locked) connection to ``target`` or raise ``TransitionNotAllowed``.

    The caller holds ``select_for_update`` on the row and saves inside its transaction.
    """
    if not can_transition(connection.state, target):
        raise TransitionNotAllowed(
            f"The key connection is {connection.get_state_display().lower()}; "
            f"it cannot become {ConnectionState(target).label.lower()}."
        )
    connection.state = target
    connection.state_reason = reason[:500]
    connection.state_changed_at = timezone.now()
    connection.save(update_fields=["state", "state_reason", "state_changed_at"])
    return connection
