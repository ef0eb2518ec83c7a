"""The review workflow shared by setup requests and re-encryption requests.

Model-agnostic business actions: each request kind's services are thin wrappers that pass their
request model, timeline model, audit event names, audit resources and notice function. Every
action runs in a transaction with the request row locked, writes its timeline entry and audit
event there, and sends notices on commit.

Refusals are domain errors (``core.errors``): ``NotFound`` when there is no such request,
``NotAllowed`` (or the kind's subclass, given as ``refused``) when the state forbids the action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.db import models, transaction
from django.utils import timezone

from audit.services import record_event
from core.errors import NotAllowed, NotFound
from review.models import CheckRun, ReviewRequest, TimelineEntry

#: A queued or running preflight older than this is considered lost (its worker died and the
#: message was dropped): a new preflight may start, and the lost one is closed as failed.
STALE_AFTER = timedelta(minutes=15)
#: ``Check.cause`` of a run closed as lost.
CAUSE_TIMED_OUT = "timed-out"

Resources = Callable[[ReviewRequest], list[dict]]


def lock_request(
    *, model: type[ReviewRequest], request_id: int, related: Iterable[str] = ("organization",)
) -> ReviewRequest:
    """The request's row, locked for the rest of the transaction; ``NotFound`` if none."""
    try:
        return (
            model.objects.select_for_update(of=("self",), no_key=True)
            .select_related(*related)
            .get(pk=request_id)
        )
    except model.DoesNotExist:
        raise NotFound(f"There is no {model._meta.verbose_name} #{request_id}.") from None


def require_assignee(req: ReviewRequest, rep, *, refused: type[NotAllowed] = NotAllowed) -> None:
    """Only the rep who claimed an open request may act on it; ``refused`` says why not."""
    if req.status != "claimed":
        raise refused(
            f"Request #{req.pk} is {req.get_status_display().lower()}; claim it first."
            if req.status == "submitted"
            else f"Request #{req.pk} is already {req.get_status_display().lower()}."
        )
    if req.assignee_id != rep.pk:
        raise refused(f"Only the assignee ({req.assignee}) can do this.")


def _audit(req: ReviewRequest, *, actor, event_name: str, resources: Resources, **params) -> None:
    record_event(
        org=req.organization,
        actor=actor,
        event_name=event_name,
        request_parameters={"requestId": req.pk, **params},
        resources=resources(req),
    )


@transaction.atomic
def claim_request(
    *,
    model: type[ReviewRequest],
    timeline: type[TimelineEntry],
    request_id: int,
    rep,
    audit_event: str,
    resources: Resources,
    refused: type[NotAllowed] = NotAllowed,
    related: Iterable[str] = ("organization",),
) -> ReviewRequest:
    """Assign a request to one rep. Two reps racing: the second gets a clear refusal."""
    req = lock_request(model=model, request_id=request_id, related=related)
    if req.status not in model.CLAIMABLE_STATUSES:
        if req.assignee_id and req.assignee_id != rep.pk:
            raise refused(f"{req.assignee} already claimed request #{req.pk}.")
        raise refused(f"Request #{req.pk} is {req.get_status_display().lower()}.")
    req.status, req.assignee, req.claimed_at = "claimed", rep, timezone.now()
    req.save(update_fields=["status", "assignee", "claimed_at"])
    timeline.objects.create(
        request=req, kind="claimed", actor=rep, message=f"Claimed by {rep.get_full_name()}."
    )
    _audit(req, actor=rep, event_name=audit_event, resources=resources)
    return req


@transaction.atomic
def add_internal_note(
    *,
    model: type[ReviewRequest],
    timeline: type[TimelineEntry],
    request_id: int,
    actor,
    note: str,
    resources: Resources,
    audit_event: str = "AddInternalNote",
) -> TimelineEntry:
    """A note on the request's timeline that only vendor staff see."""
    req = lock_request(model=model, request_id=request_id)
    entry = timeline.objects.create(
        request=req, kind="note", actor=actor, message=note, internal=True
    )
    _audit(req, actor=actor, event_name=audit_event, resources=resources)
    return entry


def close_request(
    req: ReviewRequest,
    *,
    status: str,
    timeline: type[TimelineEntry],
    kind: str,
    message: str,
    actor=None,
    now: datetime | None = None,
    **fields,
) -> ReviewRequest:
    """Finish a locked request: its final ``status``, ``closed_at`` and any other ``fields``
    saved, and the closing line on its timeline. Callers audit and notify."""
    req.status, req.closed_at = status, now or timezone.now()
    for name, value in fields.items():
        setattr(req, name, value)
    req.save(update_fields=["status", "closed_at", *fields])
    timeline.objects.create(request=req, kind=kind, actor=actor, message=message)
    return req


@transaction.atomic
def reject_request(
    *,
    model: type[ReviewRequest],
    timeline: type[TimelineEntry],
    request_id: int,
    rep,
    reason: str,
    audit_event: str,
    resources: Resources,
    notify: Callable[[ReviewRequest], None],
    refused: type[NotAllowed] = NotAllowed,
    related: Iterable[str] = ("organization",),
) -> ReviewRequest:
    """The assignee turns the request down with a reason the customer reads; on commit
    ``notify(req)`` tells them."""
    req = lock_request(model=model, request_id=request_id, related=related)
    require_assignee(req, rep, refused=refused)
    reason = reason.strip()
    if not reason:
        raise refused("Give the customer a reason.")
    close_request(
        req,
        status="rejected",
        timeline=timeline,
        kind="rejected",
        message=reason,
        actor=rep,
        rejection_reason=reason,
    )
    _audit(req, actor=rep, event_name=audit_event, resources=resources, reason=reason)
    transaction.on_commit(lambda: notify(req))
    return req


# --- Preflight runs ----------------------------------------------------------------------


def lost_run_checks(run: CheckRun, *, stale_after: timedelta = STALE_AFTER) -> list[dict]:
    """The report of a run closed as lost (the shape of ``setup.checks.Check.to_dict``)."""
    minutes = int(stale_after.total_seconds() // 60)
    return [
        {
            "name": "preflight",
            "region": "",
            "passed": False,
            "detail": f"Preflight #{run.pk} did not finish within {minutes} minutes.",
            "remediation": "Run the preflight again.",
            "cause": CAUSE_TIMED_OUT,
            "label": "preflight",
        }
    ]


def close_lost_run(
    run: CheckRun, *, now: datetime | None = None, stale_after: timedelta = STALE_AFTER
) -> CheckRun:
    """Close a (locked) queued or running run whose worker was lost, as failed: timed out."""
    run.status = CheckRun.Status.FAILED
    run.checks = lost_run_checks(run, stale_after=stale_after)
    run.finished_at = now or timezone.now()
    run.save(update_fields=["status", "checks", "finished_at"])
    return run


def clear_active_runs(
    runs: models.QuerySet,
    *,
    refused: type[NotAllowed] = NotAllowed,
    now: datetime | None = None,
    stale_after: timedelta = STALE_AFTER,
) -> list[CheckRun]:
    """Before a new run starts: refuse while one of ``runs`` is still active and fresh; close
    the lost ones (active for longer than ``stale_after``). Returns the runs closed."""
    now = now or timezone.now()
    active = list(runs.select_for_update(no_key=True).filter(status__in=CheckRun.ACTIVE_STATUSES))
    fresh = [run for run in active if run.created_at > now - stale_after]
    if fresh:
        raise refused(
            f"Preflight #{fresh[0].pk} of this request is still "
            f"{fresh[0].get_status_display().lower()}; wait for its result."
        )
    return [close_lost_run(run, now=now, stale_after=stale_after) for run in active]


def begin_run(*, model: type[CheckRun], run_id: int) -> tuple[CheckRun, bool]:
    """Mark a queued run running; ``(run, False)`` when it has already finished (idempotent)."""
    with transaction.atomic():
        run = model.objects.select_for_update(no_key=True).get(pk=run_id)
        if run.status in CheckRun.FINISHED_STATUSES:
            return run, False
        if run.status != CheckRun.Status.RUNNING:
            run.status = CheckRun.Status.RUNNING
            run.save(update_fields=["status"])
    return run, True


def finish_run(
    *,
    model: type[CheckRun],
    run_id: int,
    checks: list[dict],
    key_arns: dict[str, str],
    passed: bool,
    related: Iterable[str] = (),
) -> tuple[CheckRun, bool]:
    """Save a run's result, its row locked (call inside a transaction). ``(run, False)`` when
    another worker finished it first: its result stands."""
    run = (
        model.objects.select_for_update(of=("self",), no_key=True)
        .select_related(*related)
        .get(pk=run_id)
    )
    if run.status in CheckRun.FINISHED_STATUSES:
        return run, False
    run.checks, run.key_arns = checks, key_arns
    run.status = CheckRun.Status.PASSED if passed else CheckRun.Status.FAILED
    run.finished_at = timezone.now()
    run.save(update_fields=["checks", "key_arns", "status", "finished_at"])
    return run, True


def latest_passing_run(runs: models.QuerySet, *, max_age: timedelta) -> CheckRun | None:
    """The most recent finished run of ``runs`` if it passed within ``max_age``, else None.

    A pass followed by a later failure does not count: the newer result is what AWS says now.
    """
    latest = (
        runs.filter(status__in=CheckRun.FINISHED_STATUSES)
        .exclude(finished_at=None)
        .order_by("-finished_at", "-pk")
        .first()
    )
    if latest is None or latest.status != CheckRun.Status.PASSED:
        return None
    if latest.finished_at < timezone.now() - max_age:
        return None
    return latest
