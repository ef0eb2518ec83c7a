"""Re-encryption requests: an org admin asks, an account rep claims, approves or rejects.

One function per business action, each in a transaction with the request row locked, each
writing its audit event; Celery work is enqueued on commit. The job itself (switching keys,
re-wrapping, verifying, retiring) lives in :mod:`reencryption.job`; the preflight of the new
keys in :mod:`reencryption.services.preflight`. The claim/reject/lost-run steps are the shared
review workflow (:mod:`review.services`).

Request statuses: ``submitted → claimed → approved → completed | failed``; ``submitted |
claimed → rejected`` (rep, with a reason); ``submitted | claimed | approved (job not started)
→ cancelled`` (admin). One open request (submitted, claimed, approved) per org at a time, and
only while the connection is active.

The new keys: found by the replacement alias (``alias/byok-key-management-next``, which the
onboarding kit's replacement template creates in each region) or given as key ARNs, one per
region of the location. The preflight resolves them to ARNs; approval pins the ARNs of the
passing preflight, so the job uses exactly the keys that were checked even if an alias moves.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.formats import date_format

from audit.services import record_event
from connections.models import ByokConnection, ConnectionState, RegionalKey
from core.errors import NotAllowed
from core.locations import get_location
from orgs import notices
from reencryption import job as reencryption_job
from reencryption.models import (
    ReencryptionEvent,
    ReencryptionJob,
    ReencryptionMode,
    ReencryptionPreflight,
    ReencryptionRequest,
)
from review import services as review
from setup.onboarding import REPLACEMENT_KEY_ALIAS

log = logging.getLogger(__name__)
R = ReencryptionRequest.Status
#: A maintenance window may start at most this far ahead.
MAX_WINDOW_AHEAD = timedelta(days=90)

KEY_ARN_RE = re.compile(
    r"^arn:aws(?:-[a-z]+)*:kms:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d):(?P<account>\d{12}):"
    r"key/(?P<key_id>(?:mrk-)?[0-9a-fA-F-]{32,40})$"
)


class ReencryptionRefused(NotAllowed):
    """A re-encryption action refused for a reason the actor can read."""


def parse_key_arn(value: str) -> dict[str, str] | None:
    """``{"region", "account", "key_id"}`` of a KMS key ARN, or None if it is not one."""
    match = KEY_ARN_RE.match(value.strip())
    return match.groupdict() if match else None


def _resources(req: ReencryptionRequest) -> list[dict]:
    return [{"type": "BYOK::ReencryptionRequest", "ARN": f"reencryption-request/{req.pk}"}]


def _locked(request_id: int) -> ReencryptionRequest:
    return review.lock_request(
        model=ReencryptionRequest, request_id=request_id, related=("organization", "connection")
    )


# --- The admin's actions ---------------------------------------------------------------------


@transaction.atomic
def request_reencryption(
    *,
    org,
    actor,
    mode: str = ReencryptionMode.REWRAP,
    key_arns: dict[str, str] | None = None,
    scheduled_for=None,
    window_timezone: str = "",
    source_ip: str = "",
) -> ReencryptionRequest:
    """An org admin asks to move the org's data to new keys: found by the replacement alias
    (``key_arns`` empty) or the given ARNs (region → ARN); now (``scheduled_for`` None) or in a
    maintenance window starting at ``scheduled_for`` (aware datetime, in the future)."""
    connection = (
        ByokConnection.objects.select_for_update(no_key=True).filter(organization=org).first()
    )
    if connection is None:
        raise ReencryptionRefused("Your organization has no BYOK connection to re-encrypt.")
    if connection.state != ConnectionState.ACTIVE:
        raise ReencryptionRefused(
            "Re-encryption can only be requested while your key connection is active; it is "
            f"{connection.get_state_display().lower()}."
        )
    open_request = ReencryptionRequest.objects.filter(
        organization=org, status__in=ReencryptionRequest.OPEN_STATUSES
    ).first()
    if open_request is not None:
        raise ReencryptionRefused(
            f"Re-encryption request #{open_request.pk} is still "
            f"{open_request.get_status_display().lower()}: one request at a time."
        )
    if mode not in ReencryptionMode.values:
        raise ReencryptionRefused(f"Unknown re-encryption mode {mode!r}.")
    now = timezone.now()
    if scheduled_for is not None:
        if timezone.is_naive(scheduled_for):
            raise ReencryptionRefused("The maintenance window needs a time zone.")
        if scheduled_for <= now:
            raise ReencryptionRefused("The maintenance window must start in the future.")
        if scheduled_for > now + MAX_WINDOW_AHEAD:
            raise ReencryptionRefused("The maintenance window must start within 90 days.")
    key_arns = {r: a.strip() for r, a in (key_arns or {}).items() if a and a.strip()}
    problems = key_arn_problems(connection, key_arns) if key_arns else []
    if problems:
        raise ReencryptionRefused(" ".join(problems))
    req = ReencryptionRequest.objects.create(
        organization=org,
        connection=connection,
        requested_by=actor,
        mode=mode,
        key_source=(
            ReencryptionRequest.KeySource.ARNS if key_arns else ReencryptionRequest.KeySource.ALIAS
        ),
        key_alias="" if key_arns else REPLACEMENT_KEY_ALIAS,
        requested_key_arns=key_arns,
        scheduled_for=scheduled_for,
        window_timezone=window_timezone if scheduled_for else "",
    )
    when = (
        f"in the maintenance window starting {_when(req)}"
        if scheduled_for
        else "as soon as it is approved"
    )
    ReencryptionEvent.objects.create(
        request=req,
        kind="submitted",
        actor=actor,
        message=f"Re-encryption requested ({req.get_mode_display().lower()}), {when}.",
    )
    record_event(
        org=org,
        actor=actor,
        event_name="RequestReencryption",
        source_ip=source_ip,
        request_parameters={
            "mode": mode,
            "keySource": req.key_source,
            "keyAlias": req.key_alias,
            "keyArns": key_arns,
            "scheduledFor": scheduled_for.isoformat() if scheduled_for else None,
            "windowTimeZone": req.window_timezone,
        },
        response_elements={"requestId": req.pk},
        resources=_resources(req),
        recipient_account_id=connection.aws_account_id,
    )
    transaction.on_commit(lambda: _notify_reps_submitted(req.pk))
    return req


def key_arn_problem(connection: ByokConnection, region: str, arn: str, *, in_use=None) -> str:
    """What is wrong with ``arn`` as the new key of ``region`` ("" when it is fine)."""
    if not arn:
        return f"Give the ARN of the new key in {region}."
    parts = parse_key_arn(arn)
    if parts is None:
        return (
            f"That is not a KMS key ARN (arn:aws:kms:{region}:{connection.aws_account_id}:"
            "key/…); aliases are not accepted here."
        )
    if parts["region"] != region:
        return f"That key is in {parts['region']}, not in {region}."
    if parts["account"] != connection.aws_account_id:
        return (
            f"That key is in AWS account {parts['account']}; your keys live in "
            f"{connection.aws_account_id}."
        )
    if in_use is None:
        in_use = _keys_in_use(connection)
    if arn in in_use:
        return "That is one of your current keys; give a new one."
    return ""


def _keys_in_use(connection: ByokConnection) -> set[str]:
    return set(
        RegionalKey.objects.filter(connection=connection, retired_at=None).values_list(
            "key_arn", flat=True
        )
    )


def key_arn_problems(connection: ByokConnection, key_arns: dict[str, str]) -> list[str]:
    """What is wrong with ARNs given for the new keys (empty when they are fine)."""
    location = get_location(connection.location)
    in_use = _keys_in_use(connection)
    problems = [
        f"{region}: {problem}"
        for region in location.regions
        if (problem := key_arn_problem(connection, region, key_arns.get(region, ""), in_use=in_use))
    ]
    extra = sorted(set(key_arns) - set(location.regions))
    if extra:
        problems.append(f"{', '.join(extra)} is not a region of {location.name}.")
    return problems


@transaction.atomic
def cancel_reencryption_request(*, org, request_id: int, actor) -> ReencryptionRequest:
    """The admin withdraws a request that has not started yet."""
    req = _locked(request_id)
    if req.organization_id != org.pk:
        raise ReencryptionRequest.DoesNotExist
    job = ReencryptionJob.objects.select_for_update(no_key=True).filter(request=req).first()
    if not req.is_open or (job is not None and job.state != ReencryptionJob.State.SCHEDULED):
        raise ReencryptionRefused(
            f"Request #{req.pk} can no longer be cancelled: "
            + (
                "its job has started."
                if req.is_open
                else f"it is {req.get_status_display().lower()}."
            )
        )
    now = timezone.now()
    review.close_request(
        req,
        status=R.CANCELLED,
        timeline=ReencryptionEvent,
        kind="cancelled",
        actor=actor,
        message="Cancelled by the customer.",
        now=now,
    )
    if job is not None:
        job.state, job.finished_at, job.state_reason = (
            ReencryptionJob.State.CANCELLED,
            now,
            f"Cancelled by {actor.email}.",
        )
        job.save(update_fields=["state", "finished_at", "state_reason"])
    record_event(
        org=org,
        actor=actor,
        event_name="CancelReencryption",
        request_parameters={"requestId": req.pk},
        resources=_resources(req),
    )
    return req


# --- The account rep's actions ---------------------------------------------------------------


def claim_reencryption_request(*, request_id: int, rep) -> ReencryptionRequest:
    return review.claim_request(
        model=ReencryptionRequest,
        timeline=ReencryptionEvent,
        request_id=request_id,
        rep=rep,
        audit_event="ClaimReencryptionRequest",
        resources=_resources,
        refused=ReencryptionRefused,
    )


def _require_assignee(req: ReencryptionRequest, rep) -> None:
    review.require_assignee(req, rep, refused=ReencryptionRefused)


def _notify_rejected(req: ReencryptionRequest) -> None:
    _notify_admins(
        req.pk,
        subject=f"Your re-encryption request #{req.pk} was rejected",
        body=f"Reason: {req.rejection_reason}\n",
    )


def reject_reencryption_request(*, request_id: int, rep, reason: str) -> ReencryptionRequest:
    return review.reject_request(
        model=ReencryptionRequest,
        timeline=ReencryptionEvent,
        request_id=request_id,
        rep=rep,
        reason=reason,
        audit_event="RejectReencryption",
        resources=_resources,
        notify=_notify_rejected,
        refused=ReencryptionRefused,
    )


def passing_preflight(req: ReencryptionRequest) -> ReencryptionPreflight | None:
    """The newest finished preflight of the request if it passed recently enough."""
    return review.latest_passing_run(
        req.preflights.all(), max_age=timedelta(hours=settings.PREFLIGHT_MAX_AGE_HOURS)
    )


@transaction.atomic
def approve_reencryption_request(
    *,
    request_id: int,
    rep,
    batch_size: int | None = None,
    batch_interval_s: float | None = None,
) -> ReencryptionRequest:
    """Approve after a passing preflight: the job is scheduled for the request's window (or
    now). ``batch_size`` / ``batch_interval_s`` throttle the job (default from settings)."""
    req = _locked(request_id)
    _require_assignee(req, rep)
    run = passing_preflight(req)
    if run is None:
        raise ReencryptionRefused(
            "Approval needs a passing preflight of the new keys from the last "
            f"{settings.PREFLIGHT_MAX_AGE_HOURS} hours. Run the preflight."
        )
    connection = ByokConnection.objects.select_for_update(no_key=True).get(pk=req.connection_id)
    if connection.state not in (ConnectionState.ACTIVE, ConnectionState.DEGRADED):
        raise ReencryptionRefused(
            f"The organization's key connection is {connection.get_state_display().lower()}; "
            "approve once it is active again."
        )
    regions = get_location(connection.location).regions
    missing = [r for r in regions if not run.key_arns.get(r)]
    if missing:
        raise ReencryptionRefused(f"The preflight found no new key in {', '.join(missing)}.")
    now = timezone.now()
    req.key_arns = {r: run.key_arns[r] for r in regions}
    req.status, req.approved_at = R.APPROVED, now
    req.save(update_fields=["key_arns", "status", "approved_at"])
    try:
        with transaction.atomic():
            job = ReencryptionJob.objects.create(
                request=req,
                connection=connection,
                mode=req.mode,
                scheduled_for=max(req.scheduled_for or now, now),
                batch_size=batch_size or reencryption_job.default_batch_size(req.mode),
                batch_interval_s=(
                    batch_interval_s
                    if batch_interval_s is not None
                    else reencryption_job.default_batch_interval_s()
                ),
            )
    except IntegrityError:
        raise ReencryptionRefused(
            "Another re-encryption job of this organization is still active."
        ) from None
    starts = "now" if job.scheduled_for <= now else f"at {_when(req)}"
    ReencryptionEvent.objects.create(
        request=req,
        kind="approved",
        actor=rep,
        message=f"Approved after preflight #{run.pk}; the job starts {starts}.",
    )
    record_event(
        org=req.organization,
        actor=rep,
        event_name="ApproveReencryption",
        request_parameters={"requestId": req.pk, "preflightId": run.pk},
        response_elements={
            "jobId": job.pk,
            "scheduledFor": job.scheduled_for.isoformat(),
            "keyArns": req.key_arns,
            "mode": req.mode,
        },
        resources=_resources(req)
        + [{"type": "AWS::KMS::Key", "ARN": arn} for arn in req.key_arns.values()],
        recipient_account_id=connection.aws_account_id,
    )
    job_id, eta = job.pk, job.scheduled_for

    def after_commit():
        _notify_admins(
            req.pk,
            subject=f"Re-encryption request #{req.pk} approved",
            body=f"The re-encryption of your BYOK data starts {starts}. Your apps stay online; "
            "follow the progress on the re-encryption page.\n",
        )
        reencryption_job.enqueue_job(job_id, eta=eta)

    transaction.on_commit(after_commit)
    return req


# --- Notices -----------------------------------------------------------------------------------


def _when(req: ReencryptionRequest) -> str:
    if req.scheduled_for is None:
        return "when approved"
    zone = req.window_timezone or "UTC"
    local = req.scheduled_for.astimezone(ZoneInfo(zone))
    utc = date_format(req.scheduled_for, "j F Y H:i")
    return f"{date_format(local, 'j F Y H:i')} {zone} ({utc} UTC)"


def _notify_reps_submitted(request_id: int) -> None:
    req = ReencryptionRequest.objects.select_related("organization").get(pk=request_id)
    notices.send_notice(
        subject=f"New re-encryption request #{req.pk} from {req.organization}",
        body=(
            f"{req.organization} asks to re-encrypt its BYOK data under new keys "
            f"({req.get_mode_display().lower()}), start {_when(req)}.\n"
            "Claim it in the staff pages: "
            f"{notices.absolute_url('reencryption:staff-detail', request_id=req.pk)}\n"
        ),
        recipients=notices.rep_emails(),
    )


def _notify_admins(request_id: int, *, subject: str, body: str) -> None:
    req = ReencryptionRequest.objects.select_related("organization", "assignee").get(pk=request_id)
    recipients = notices.org_admin_emails(req.organization)
    if req.assignee:
        recipients.append(req.assignee.email)
    notices.send_notice(
        subject=subject,
        body=body
        + "Details: "
        + notices.absolute_url("reencryption:detail", org_id=req.organization_id, request_id=req.pk)
        + "\n",
        recipients=recipients,
    )
