"""Re-encryption requests: an org admin asks, an account rep preflights and approves.

One function per business action, each in a transaction with the request row locked, each
writing its audit event; Celery work is enqueued on commit. The job itself (switching keys,
re-wrapping, verifying, retiring) lives in :mod:`reencryption.job`.

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

import hmac
import logging
import re
from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.formats import date_format

from audit.services import record_event, user_identity_for
from connections import aws
from connections.key_usage import recorder_for
from connections.models import ByokConnection, ConnectionState, RegionalKey
from core.errors import NotAllowed
from core.locations import get_location
from core.tasks import enqueue_on_commit
from orgs import notices
from reencryption import job as reencryption_job
from reencryption.models import (
    ReencryptionEvent,
    ReencryptionJob,
    ReencryptionMode,
    ReencryptionPreflight,
    ReencryptionRequest,
)
from review.services import require_assignee
from setup import preflight
from setup.models import PreflightRun
from setup.onboarding import REPLACEMENT_KEY_ALIAS

log = logging.getLogger(__name__)
R = ReencryptionRequest.Status
PREFLIGHT_WORKER = "byok-portal re-encryption preflight"
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
    return (
        ReencryptionRequest.objects.select_for_update()
        .select_related("organization", "connection")
        .get(pk=request_id)
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
    connection = ByokConnection.objects.select_for_update().filter(organization=org).first()
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
    job = ReencryptionJob.objects.select_for_update().filter(request=req).first()
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
    req.status, req.closed_at = R.CANCELLED, now
    req.save(update_fields=["status", "closed_at"])
    if job is not None:
        job.state, job.finished_at, job.state_reason = (
            ReencryptionJob.State.CANCELLED,
            now,
            f"Cancelled by {actor.email}.",
        )
        job.save(update_fields=["state", "finished_at", "state_reason"])
    ReencryptionEvent.objects.create(
        request=req, kind="cancelled", actor=actor, message="Cancelled by the customer."
    )
    record_event(
        org=org,
        actor=actor,
        event_name="CancelReencryption",
        request_parameters={"requestId": req.pk},
        resources=_resources(req),
    )
    return req


# --- The account rep's actions ---------------------------------------------------------------


@transaction.atomic
def claim_reencryption_request(*, request_id: int, rep) -> ReencryptionRequest:
    req = _locked(request_id)
    if req.status != R.SUBMITTED:
        if req.assignee_id and req.assignee_id != rep.pk:
            raise ReencryptionRefused(f"{req.assignee} already claimed request #{req.pk}.")
        raise ReencryptionRefused(f"Request #{req.pk} is {req.get_status_display().lower()}.")
    req.status, req.assignee, req.claimed_at = R.CLAIMED, rep, timezone.now()
    req.save(update_fields=["status", "assignee", "claimed_at"])
    ReencryptionEvent.objects.create(
        request=req, kind="claimed", actor=rep, message=f"Claimed by {rep.get_full_name()}."
    )
    record_event(
        org=req.organization,
        actor=rep,
        event_name="ClaimReencryptionRequest",
        request_parameters={"requestId": req.pk},
        resources=_resources(req),
    )
    return req


def _require_assignee(req: ReencryptionRequest, rep) -> None:
    require_assignee(req, rep, refused=ReencryptionRefused)


@transaction.atomic
def reject_reencryption_request(*, request_id: int, rep, reason: str) -> ReencryptionRequest:
    req = _locked(request_id)
    _require_assignee(req, rep)
    reason = reason.strip()
    if not reason:
        raise ReencryptionRefused("Give the customer a reason.")
    req.status, req.rejection_reason, req.closed_at = R.REJECTED, reason, timezone.now()
    req.save(update_fields=["status", "rejection_reason", "closed_at"])
    ReencryptionEvent.objects.create(request=req, kind="rejected", actor=rep, message=reason)
    record_event(
        org=req.organization,
        actor=rep,
        event_name="RejectReencryption",
        request_parameters={"requestId": req.pk, "reason": reason},
        resources=_resources(req),
    )
    transaction.on_commit(
        lambda: _notify_admins(
            req.pk,
            subject=f"Your re-encryption request #{req.pk} was rejected",
            body=f"Reason: {reason}\n",
        )
    )
    return req


def passing_preflight(req: ReencryptionRequest) -> ReencryptionPreflight | None:
    """The newest finished preflight of the request if it passed recently enough."""
    newest = req.preflights.exclude(finished_at=None).order_by("-finished_at", "-pk").first()
    max_age = timedelta(hours=settings.PREFLIGHT_MAX_AGE_HOURS)
    if (
        newest is None
        or newest.status != PreflightRun.Status.PASSED
        or newest.finished_at < timezone.now() - max_age
    ):
        return None
    return newest


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
    connection = ByokConnection.objects.select_for_update().get(pk=req.connection_id)
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


# --- Preflight of the new keys -----------------------------------------------------------------


@transaction.atomic
def start_reencryption_preflight(*, request_id: int, actor) -> ReencryptionPreflight:
    req = _locked(request_id)
    _require_assignee(req, actor)
    now = timezone.now()
    active = list(
        req.preflights.select_for_update().filter(
            status__in=(PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING)
        )
    )
    fresh = [run for run in active if run.created_at > now - preflight.STALE_AFTER]
    if fresh:
        raise ReencryptionRefused(
            f"Preflight #{fresh[0].pk} is still {fresh[0].get_status_display().lower()}; "
            "wait for its result."
        )
    for lost in active:
        lost.status, lost.finished_at = PreflightRun.Status.FAILED, now
        lost.checks = [
            preflight.Check(
                "preflight",
                "",
                False,
                "The preflight did not finish.",
                "Run it again.",
                "timed-out",
            ).to_dict()
        ]
        lost.save(update_fields=["status", "finished_at", "checks"])
    run = ReencryptionPreflight.objects.create(request=req, started_by=actor)
    ReencryptionEvent.objects.create(
        request=req,
        kind="preflight",
        actor=actor,
        message=f"Preflight #{run.pk} started: checking the new keys.",
    )
    record_event(
        org=req.organization,
        actor=actor,
        event_name="StartReencryptionPreflight",
        request_parameters={"requestId": req.pk, "preflightId": run.pk},
        resources=_resources(req),
    )
    enqueue_on_commit("reencryption.tasks.run_reencryption_preflight_task", run.pk)
    return run


def execute_reencryption_preflight(*, preflight_id: int) -> ReencryptionPreflight:
    """Run a queued preflight (AWS calls outside transactions); idempotent."""
    finished = (PreflightRun.Status.PASSED, PreflightRun.Status.FAILED)
    with transaction.atomic():
        run = ReencryptionPreflight.objects.select_for_update().get(pk=preflight_id)
        if run.status in finished:
            return run
        run.status = PreflightRun.Status.RUNNING
        run.save(update_fields=["status"])
    req = ReencryptionRequest.objects.select_related("organization", "connection").get(
        pk=run.request_id
    )
    connection, org = req.connection, req.organization
    context = {"org": str(org.pk), "purpose": "reencryption-preflight"}
    try:
        report = preflight.run_preflight_checks(
            org=org,
            role_arn=connection.role_arn,
            external_id=connection.external_id,
            location_code=connection.location,
            alias=req.key_alias or REPLACEMENT_KEY_ALIAS,
            key_ids=req.requested_key_arns or None,
            encryption_context=context,
        )
        if report.passed:
            report.checks.extend(_replacement_checks(connection, report.key_arns, context))
    except Exception:
        log.exception("Re-encryption preflight #%s could not complete", preflight_id)
        report = preflight.PreflightReport(
            checks=[
                preflight.Check(
                    "preflight",
                    "",
                    False,
                    "The preflight could not complete because of an error on our side.",
                    "Run the preflight again; if it fails again, contact support.",
                    preflight.CAUSE_INTERNAL,
                )
            ]
        )
    return _finish_preflight(preflight_id, report)


def _replacement_checks(
    connection: ByokConnection, key_arns: dict[str, str], context: dict
) -> list[preflight.Check]:
    """Beyond the setup checks: each new key is in the connected account, is not a key in use,
    and a data key re-wraps from the current key to it (``kms:ReEncryptFrom``/``To``)."""
    Check = preflight.Check
    checks: list[Check] = []
    current = {
        k.region: k.key_arn
        for k in RegionalKey.objects.filter(connection=connection, is_current=True)
    }
    in_use = set(
        RegionalKey.objects.filter(connection=connection, retired_at=None).values_list(
            "key_arn", flat=True
        )
    )
    record = recorder_for(connection.organization)
    re_encrypt_params: dict = {}

    def on_call(call: aws.KmsCall) -> None:
        # connections.aws reports ReEncrypt without its contexts and source key: add them.
        if call.operation == "ReEncrypt" and re_encrypt_params:
            call = replace(
                call, encryption_context=context, request_parameters=dict(re_encrypt_params)
            )
        record(call)

    session = aws.assume_customer_role(
        role_arn=connection.role_arn,
        external_id=connection.external_id,
        cached=False,
        on_call=on_call,
    )
    for region, arn in key_arns.items():
        account = arn.split(":")[4] if arn.count(":") >= 5 else ""
        if account != connection.aws_account_id:
            checks.append(
                Check(
                    "key-account",
                    region,
                    False,
                    f"The key {arn} is in AWS account {account}, not in "
                    f"{connection.aws_account_id}.",
                    f"Create the new key in account {connection.aws_account_id}.",
                    "wrong-account",
                )
            )
            continue
        checks.append(Check("key-account", region, True, f"In account {account}.", ""))
        if arn in in_use:
            checks.append(
                Check(
                    "key-new",
                    region,
                    False,
                    f"The key {arn} is already one of your keys in use in {region}.",
                    "Deploy the replacement-keys template (it creates a new key under the alias "
                    f"{REPLACEMENT_KEY_ALIAS}) or give the ARN of a new key.",
                    "key-in-use",
                )
            )
            continue
        checks.append(Check("key-new", region, True, "A new key, not one in use.", ""))
        source = current.get(region)
        if not source:
            continue
        plaintext = recovered = None
        try:
            plaintext, blob, _ = session.generate_data_key(region, source, context)
            re_encrypt_params.update(
                SourceKeyId=source,
                DestinationKeyId=arn,
                SourceEncryptionContext=context,
                DestinationEncryptionContext=context,
            )
            rewrapped = session.re_encrypt(
                region, blob=blob, source_key=source, dest_key=arn, context=context
            )
            recovered = session.decrypt(region, arn, rewrapped, context)
            ok = hmac.compare_digest(plaintext, recovered)
        except aws.AwsError as err:
            ok = False
            detail = f"ReEncrypt from {source} to {arn} failed ({err.code or err.cause})."
        else:
            detail = (
                f"A data key re-wrapped from the current key to {arn} and decrypted."
                if ok
                else "The re-wrapped data key came back different."
            )
        finally:
            del plaintext, recovered
        checks.append(
            Check(
                "re-encrypt",
                region,
                ok,
                detail,
                ""
                if ok
                else "Let the role use kms:ReEncryptFrom on the current key and kms:ReEncryptTo "
                "on the new key (the kit's key policy does), and keep both keys enabled.",
                "" if ok else "re-encrypt-failed",
            )
        )
    return checks


@transaction.atomic
def _finish_preflight(preflight_id: int, report: preflight.PreflightReport):
    run = (
        ReencryptionPreflight.objects.select_for_update()
        .select_related("request__organization", "request__connection")
        .get(pk=preflight_id)
    )
    if run.status in (PreflightRun.Status.PASSED, PreflightRun.Status.FAILED):
        return run
    data = report.to_dict()
    run.checks, run.key_arns = data["checks"], data["key_arns"]
    run.status = PreflightRun.Status.PASSED if report.passed else PreflightRun.Status.FAILED
    run.finished_at = timezone.now()
    run.save(update_fields=["checks", "key_arns", "status", "finished_at"])
    req = run.request
    ReencryptionEvent.objects.create(
        request=req, kind="preflight", message=f"#{run.pk}: {report.summary()}"
    )
    record_event(
        event_name="RunReencryptionPreflight",
        org=req.organization,
        user_identity=user_identity_for(system=PREFLIGHT_WORKER),
        request_parameters={"requestId": req.pk, "preflightId": run.pk},
        response_elements={
            "outcome": run.status,
            "transient": report.transient,
            "failedChecks": [
                {"name": c.name, "region": c.region, "cause": c.cause} for c in report.failures
            ],
            "keyArns": dict(report.key_arns),
        },
        resources=[{"type": "AWS::KMS::Key", "ARN": arn} for arn in report.key_arns.values()],
        recipient_account_id=req.connection.aws_account_id,
    )
    return run


# --- Notices -----------------------------------------------------------------------------------


def _when(req: ReencryptionRequest) -> str:
    if req.scheduled_for is None:
        return "when approved"
    from zoneinfo import ZoneInfo

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
            f"Claim it in the staff pages: /staff/requests/reencryption/{req.pk}/\n"
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
        body=body + f"Details: /orgs/{req.organization_id}/byok/reencrypt/{req.pk}/\n",
        recipients=recipients,
    )
