"""The state machine of a scoped revocation (one site, one app instance, one period of data),
as data, in the style of ``connections.lifecycle`` (the whole org's connection).

revoked → restoring → restored | revoked (a check failed or timed out);
revoked | restoring → expired (the restore window ended: the scope's data keys are destroyed).

Apps of a revoked site or app instance, and records sealed by a revoked period's data keys,
are refused by the data plane in every state of ``BLOCKING_STATES`` (the access guard's
query reads them). Restore needs the same step-up as the org-wide kill switch, within the
same window (``BYOK_RESTORE_WINDOW_DAYS``), and passes the same checks first, run with the
scope's own encryption context.
"""

from dataclasses import dataclass

from django.utils import timezone

from connections.lifecycle import Actor, Deadline, StepUp, TransitionNotAllowed
from connections.models import ScopedRevocation, ScopeKind, ScopeState

R = ScopeState
A = Actor


@dataclass(frozen=True)
class ScopeStateInfo:
    state: str
    #: The scope's data is refused in this state.
    blocks: bool
    description: str


@dataclass(frozen=True)
class ScopeEdge:
    source: str
    target: str
    actors: frozenset[Actor]
    step_up: StepUp = StepUp.NONE
    what: str = ""


STATES: dict[str, ScopeStateInfo] = {
    R.REVOKED: ScopeStateInfo(R.REVOKED, True, "Refused; the restore window runs."),
    R.RESTORING: ScopeStateInfo(R.RESTORING, True, "The restore checks run; still refused."),
    R.RESTORED: ScopeStateInfo(R.RESTORED, False, "Every check passed; the scope is back."),
    R.EXPIRED: ScopeStateInfo(
        R.EXPIRED, True, "The restore window ended; the scope's data keys are destroyed."
    ),
}

EDGES: tuple[ScopeEdge, ...] = (
    ScopeEdge(
        R.REVOKED,
        R.RESTORING,
        frozenset({A.ORG_ADMIN}),
        StepUp.DESTRUCTIVE,
        "The admin asks for the scope back.",
    ),
    ScopeEdge(R.RESTORING, R.RESTORED, frozenset({A.WORKER}), what="Every check passed."),
    ScopeEdge(
        R.RESTORING,
        R.REVOKED,
        frozenset({A.WORKER, A.MONITOR}),
        what="A check failed, or did not finish in time.",
    ),
    ScopeEdge(R.REVOKED, R.EXPIRED, frozenset({A.MONITOR}), what="The restore window ended."),
    ScopeEdge(
        R.RESTORING, R.EXPIRED, frozenset({A.MONITOR}), what="The window ended during the check."
    ),
)

#: Revoking a scope: who may, and the step-up an admin needs (a new row starts ``revoked``).
REVOKE_ACTORS = frozenset({A.ORG_ADMIN, A.MONITOR})
REVOKE_STEP_UP = StepUp.DESTRUCTIVE

DEADLINES: dict[str, Deadline] = {
    R.REVOKED: Deadline(
        R.REVOKED,
        starts_at="revoked_at",
        setting="BYOK_RESTORE_WINDOW_DAYS",
        unit="days",
        then=R.EXPIRED,
        what="The restore window: after it the scope's data keys are destroyed.",
    ),
    R.RESTORING: Deadline(
        R.RESTORING,
        starts_at="state_changed_at",
        setting="BYOK_RESTORE_CHECK_TIMEOUT_S",
        unit="seconds",
        then=R.REVOKED,
        what="The restore checks must finish; otherwise back to revoked.",
    ),
}

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    state: frozenset(e.target for e in EDGES if e.source == state) for state in STATES
}
#: States in which the scope's data is refused (the access guard's query).
BLOCKING_STATES = frozenset(s for s, info in STATES.items() if info.blocks)
#: Blocking and not yet decided for good: at most one per app and per site.
OPEN_STATES = frozenset({R.REVOKED, R.RESTORING})
RESTORABLE_STATES = frozenset(
    e.source for e in EDGES if e.target == R.RESTORING and A.ORG_ADMIN in e.actors
)
RESTORE_WINDOW_STATES = OPEN_STATES


def scope_flags(revocation: ScopedRevocation, now=None) -> dict:
    """What the pages may offer for a scoped revocation (templates read these, not states)."""
    now = now or timezone.now()
    window_open = revocation.state in RESTORE_WINDOW_STATES and revocation.restore_deadline > now
    return {
        "blocks": revocation.state in BLOCKING_STATES,
        "restorable": revocation.state in RESTORABLE_STATES and window_open,
        "restoring": revocation.state == R.RESTORING,
        "window_open": window_open,
        "is_period": revocation.kind == ScopeKind.PERIOD,
    }


def transition(revocation: ScopedRevocation, target: str, *, reason: str = "") -> None:
    """Move a (locked) scoped revocation to ``target`` or raise ``TransitionNotAllowed``."""
    if target not in ALLOWED_TRANSITIONS.get(revocation.state, frozenset()):
        raise TransitionNotAllowed(
            f"Access to {revocation.label} is {revocation.get_state_display().lower()}; "
            f"it cannot become {ScopeState(target).label.lower()}."
        )
    revocation.state = target
    revocation.state_reason = reason[:500]
    revocation.state_changed_at = timezone.now()
    revocation.save(update_fields=["state", "state_reason", "state_changed_at"])
