"""The BYOK connection state machine, as data: the only place states, transitions, who may
trigger them, what they do to the apps and the deadlines of timed states are written down.

pending → active → revoked → (restoring → active) | expired;
active → re-encrypting → active; active ↔ degraded (transient AWS failures).

Views, services, the health monitor, the admin and the templates read the names below
(``USABLE_STATES``, ``REVOCABLE_STATES``, ``MONITORED_STATES``, ``DEADLINES`` …); none of them
types a set of states of its own.

Re-encryption and the kill switch (``reencryption.job``):

* ``active → re-encrypting``: the job switches to the new keys (one transaction); also the
  re-encryption app's receiver of ``key_access_restored``: a verified restore ends
  ``active`` and, if a job was paused by the revocation, the receiver moves the connection on
  to re-encrypting in the same transaction and the job resumes from its checkpoint.
* ``re-encrypting → active``: the job retired the old keys, or failed (both keys stay in use).
* ``re-encrypting → revoked``: revoke stays available during a job; the job pauses.
* No ``re-encrypting → degraded``: a job rides out transient AWS failures itself (retries,
  then the sweeper), and ``degraded → active`` would lose the fact that a job is running.

No state without a way out: every timed state has a deadline in ``DEADLINES`` that the health
monitor (beat, every ``HEALTH_MONITOR_INTERVAL_S``) enforces.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.utils import timezone

from connections.models import ByokConnection, ConnectionState
from core.errors import NotAllowed

S = ConnectionState


class Actor(StrEnum):
    """Who may trigger a transition."""

    ORG_ADMIN = "org admin"
    MONITOR = "health monitor"
    DATA_PLANE = "data plane"
    WORKER = "worker"  # provisioning, restore verification, expiry
    REENCRYPTION_JOB = "re-encryption job"


class StepUp(StrEnum):
    """What a person must prove before triggering a transition (none for machines)."""

    NONE = "none"
    #: Two-factor (TOTP) session, a sign-in within RECENT_AUTH_MAX_AGE_S, the password and
    #: the organization's name typed (security.decorators + connections.forms).
    DESTRUCTIVE = "totp + recent sign-in + password + typed org name"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    actors: frozenset[Actor]
    step_up: StepUp = StepUp.NONE
    what: str = ""


@dataclass(frozen=True)
class StateInfo:
    state: str
    #: BYOK apps online (reads and writes with the customer's keys) in this state.
    apps_online: bool
    #: The health monitor checks the keys in this state.
    monitored: bool
    description: str


@dataclass(frozen=True)
class Deadline:
    """A timed state: when it ends (from ``starts_at``) and where it goes then."""

    state: str
    #: The connection field the deadline is counted from (or stored in, for the window).
    starts_at: str
    setting: str  # declared in byokportal/settings.py
    unit: str  # "days" | "seconds"
    then: str
    what: str

    @property
    def length(self) -> timedelta:
        value = getattr(settings, self.setting)
        return timedelta(days=value) if self.unit == "days" else timedelta(seconds=value)


A = Actor
_ADMIN = frozenset({A.ORG_ADMIN})

STATES: dict[str, StateInfo] = {
    S.PENDING: StateInfo(S.PENDING, False, False, "Set-up in progress; no app uses the keys."),
    S.ACTIVE: StateInfo(S.ACTIVE, True, True, "Apps read and write with the customer's keys."),
    S.DEGRADED: StateInfo(
        S.DEGRADED, True, True, "AWS answers with transient failures; apps stay online."
    ),
    S.REENCRYPTING: StateInfo(
        S.REENCRYPTING, True, True, "A job moves the data keys under new KMS keys."
    ),
    S.REVOKED: StateInfo(
        S.REVOKED, False, True, "Key access revoked: apps offline; the restore window runs."
    ),
    S.RESTORING: StateInfo(
        S.RESTORING, False, False, "The restore checks run; apps stay offline until they pass."
    ),
    S.EXPIRED: StateInfo(
        S.EXPIRED, False, False, "The restore window ended; the data keys are destroyed."
    ),
}

EDGES: tuple[Edge, ...] = (
    Edge(S.PENDING, S.ACTIVE, frozenset({A.WORKER}), what="Provisioning verified the keys."),
    Edge(S.ACTIVE, S.DEGRADED, frozenset({A.MONITOR}), what="Consecutive transient failures."),
    Edge(S.DEGRADED, S.ACTIVE, frozenset({A.MONITOR}), what="AWS answers normally again."),
    Edge(
        S.ACTIVE,
        S.REVOKED,
        frozenset({A.ORG_ADMIN, A.MONITOR, A.DATA_PLANE}),
        StepUp.DESTRUCTIVE,
        "Kill switch, or AWS refused the key.",
    ),
    Edge(
        S.DEGRADED,
        S.REVOKED,
        frozenset({A.ORG_ADMIN, A.MONITOR, A.DATA_PLANE}),
        StepUp.DESTRUCTIVE,
        "Kill switch, or AWS refused the key.",
    ),
    Edge(
        S.REENCRYPTING,
        S.REVOKED,
        frozenset({A.ORG_ADMIN, A.MONITOR, A.DATA_PLANE}),
        StepUp.DESTRUCTIVE,
        "Kill switch during a job (the job pauses).",
    ),
    Edge(
        S.ACTIVE,
        S.REENCRYPTING,
        frozenset({A.REENCRYPTION_JOB}),
        what="A job switched to new keys, or a paused job resumes after a restore.",
    ),
    Edge(
        S.REENCRYPTING,
        S.ACTIVE,
        frozenset({A.REENCRYPTION_JOB}),
        what="The job finished or failed.",
    ),
    Edge(
        S.REVOKED,
        S.RESTORING,
        _ADMIN,
        StepUp.DESTRUCTIVE,
        "The admin says the trust policy and keys are back.",
    ),
    Edge(S.REVOKED, S.EXPIRED, frozenset({A.MONITOR}), what="The restore window ended."),
    Edge(S.RESTORING, S.ACTIVE, frozenset({A.WORKER}), what="Every restore check passed."),
    Edge(
        S.RESTORING,
        S.REVOKED,
        frozenset({A.WORKER, A.MONITOR}),
        what="A restore check failed, or the check did not finish in time.",
    ),
    Edge(
        S.RESTORING,
        S.EXPIRED,
        frozenset({A.MONITOR}),
        what="The restore window ended during the check.",
    ),
)

DEADLINES: dict[str, Deadline] = {
    S.REVOKED: Deadline(
        S.REVOKED,
        starts_at="revoked_at",
        setting="BYOK_RESTORE_WINDOW_DAYS",
        unit="days",
        then=S.EXPIRED,
        what="The restore window: after it the data keys are destroyed.",
    ),
    S.RESTORING: Deadline(
        S.RESTORING,
        starts_at="state_changed_at",
        setting="BYOK_RESTORE_CHECK_TIMEOUT_S",
        unit="seconds",
        then=S.REVOKED,
        what="The restore checks must finish; otherwise back to revoked (request it again).",
    ),
}

#: Notices of the restore window: sent once each per revocation (``notices_sent``).
NOTICE_REVOKED = "revoked"
NOTICE_EXPIRED = "expired"
#: Reminders before the restore window ends: (notice key, time before the deadline).
RESTORE_WINDOW_REMINDERS: tuple[tuple[str, timedelta], ...] = (
    ("7-days", timedelta(days=7)),
    ("1-day", timedelta(days=1)),
)

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    state: frozenset(e.target for e in EDGES if e.source == state) for state in STATES
}

#: States in which app data may be read and written with the customer's keys.
USABLE_STATES = frozenset(s for s, info in STATES.items() if info.apps_online)
#: States an org admin may revoke from.
REVOCABLE_STATES = frozenset(
    e.source for e in EDGES if e.target == S.REVOKED and A.ORG_ADMIN in e.actors
)
#: States an org admin may ask to restore from.
RESTORABLE_STATES = frozenset(
    e.source for e in EDGES if e.target == S.RESTORING and A.ORG_ADMIN in e.actors
)
#: States the health monitor checks the keys of.
MONITORED_STATES = frozenset(s for s, info in STATES.items() if info.monitored)
#: After a revocation, until restored or expired: the restore window is running.
RESTORE_WINDOW_STATES = frozenset({S.REVOKED, S.RESTORING})
#: States that follow a revocation (the revoke/restore pages show the revocation status).
AFTER_REVOCATION_STATES = RESTORE_WINDOW_STATES | {S.EXPIRED}
#: States in which a re-encryption may be requested or followed.
REENCRYPTION_STATES = frozenset(
    {e.source for e in EDGES if e.target == S.REENCRYPTING and A.REENCRYPTION_JOB in e.actors}
    | {S.REENCRYPTING}
)


def step_up_for(source: str, target: str, actor: Actor) -> StepUp | None:
    """The step-up ``actor`` needs for ``source → target``; None if it may not trigger it."""
    for edge in EDGES:
        if edge.source == source and edge.target == target and actor in edge.actors:
            return edge.step_up if actor == A.ORG_ADMIN else StepUp.NONE
    return None


def deadline_of(connection: ByokConnection) -> datetime | None:
    """When the connection's timed state ends (None for states without a deadline)."""
    deadline = DEADLINES.get(connection.state)
    if deadline is None:
        return None
    if connection.state == S.REVOKED and connection.restore_deadline:
        return connection.restore_deadline
    start = getattr(connection, deadline.starts_at, None) or connection.state_changed_at
    return start + deadline.length if start else None


def restore_window_length() -> timedelta:
    return DEADLINES[S.REVOKED].length


def state_flags(connection: ByokConnection | None, now: datetime | None = None) -> dict:
    """What the pages may offer for the connection's state (templates read these, not states)."""
    if connection is None:
        return {}
    now = now or timezone.now()
    state = connection.state
    window_open = (
        state in RESTORE_WINDOW_STATES
        and connection.restore_deadline is not None
        and connection.restore_deadline > now
    )
    return {
        "usable": state in USABLE_STATES,
        "revocable": state in REVOCABLE_STATES,
        "restorable": state in RESTORABLE_STATES and window_open,
        "restoring": state == S.RESTORING,
        "revoked": state == S.REVOKED,
        "after_revocation": state in AFTER_REVOCATION_STATES,
        "window_open": window_open,
        "window_closed": state == S.EXPIRED or (state in RESTORE_WINDOW_STATES and not window_open),
        "reencryption": state in REENCRYPTION_STATES,
        "reencrypting": state == S.REENCRYPTING,
    }


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
