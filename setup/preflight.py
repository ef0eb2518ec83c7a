"""Preflight runs of setup requests: start, execute, finish; the latest passing one.

The checks themselves (pure functions over the customer's AWS side) are in
:mod:`setup.checks`; their names are re-exported here for existing callers. A run is queued by
``start_preflight`` (after closing lost runs, see ``review.services.clear_active_runs``),
executed by a worker outside any transaction, and its result saved with the row locked.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction

from audit.models import CloudTrailSource
from audit.services import record_event, user_identity_for
from connections.models import ByokConnection
from core.errors import NotAllowed
from core.locations import get_location
from core.tasks import enqueue_on_commit
from review import services as review
from review.services import STALE_AFTER  # noqa: F401 (re-exported)
from setup.checks import (  # noqa: F401 (re-exported: setup.preflight.X keeps working)
    CAUSE_ACCESS,
    CAUSE_DISABLED,
    CAUSE_INTERNAL,
    CAUSE_INVALID_STATE,
    CAUSE_MISMATCH,
    CAUSE_NO_CONNECTION,
    CAUSE_NOT_FOUND,
    CAUSE_PENDING_DELETION,
    CAUSE_ROLE,
    CAUSE_THROTTLED,
    CAUSE_TIMED_OUT,
    CAUSE_UNREACHABLE,
    CAUSE_WRONG_REGION,
    CAUSE_WRONG_TYPE,
    CHECK_LABELS,
    CONNECTION,
    KEY_ENABLED,
    KEY_FOUND,
    KEY_REGION,
    KEY_STATE,
    KEY_TYPE,
    ROLE,
    ROUND_TRIP,
    THROTTLED_REMEDIATION,
    TRAIL_READ,
    TRANSIENT_CAUSES,
    Check,
    PreflightReport,
    TrailLocation,
    run_preflight_checks,
)
from setup.models import PreflightRun, RequestEvent, SetupRequest
from setup.onboarding import KEY_ALIAS

logger = logging.getLogger(__name__)

PREFLIGHT_WORKER = "byok-portal preflight"
FINISHED_STATUSES = PreflightRun.FINISHED_STATUSES
ACTIVE_STATUSES = PreflightRun.ACTIVE_STATUSES


class PreflightNotAllowed(NotAllowed):
    """A preflight that may not start now; the message is written for the person asking."""


def key_alias() -> str:
    """The alias the onboarding kit gives each regional key."""
    return KEY_ALIAS


def preflight_encryption_context(request: SetupRequest) -> dict[str, str]:
    return {"org": str(request.organization_id), "site": request.site_name, "purpose": "preflight"}


@transaction.atomic
def start_preflight(*, setup_request: SetupRequest, actor) -> PreflightRun:
    """Queue a preflight of the request's AWS side; the worker runs it after the commit."""
    request = (
        SetupRequest.objects.select_for_update(of=("self",), no_key=True)
        .select_related("organization")
        .get(pk=setup_request.pk)
    )
    if not request.is_open:
        raise PreflightNotAllowed(
            f"Setup request #{request.pk} is {request.get_status_display().lower()}; "
            "a preflight can only run while the request is open."
        )
    review.clear_active_runs(request.preflights.all(), refused=PreflightNotAllowed)

    run = PreflightRun.objects.create(
        request=request, started_by=actor, status=PreflightRun.Status.QUEUED
    )
    RequestEvent.objects.create(
        request=request,
        kind="preflight",
        message=f"Preflight #{run.pk} started: checking the AWS role and keys.",
        actor=actor,
    )
    record_event(
        event_name="StartPreflight",
        org=request.organization,
        actor=actor,
        request_parameters={
            "setupRequestId": request.pk,
            "preflightRunId": run.pk,
            "location": request.location,
        },
    )
    enqueue_on_commit("setup.tasks.run_preflight_task", run.pk)
    return run


def execute_preflight(*, preflight_run_id: int) -> PreflightRun:
    """Run a queued preflight and save its report. Idempotent: a finished run is returned as is.

    The AWS calls happen outside any database transaction; only the result is saved atomically
    (with the run's row locked, so two workers never both finish the same run).
    """
    run, started = review.begin_run(model=PreflightRun, run_id=preflight_run_id)
    if not started:
        return run

    request = SetupRequest.objects.select_related("organization").get(pk=run.request_id)
    org = request.organization
    connection = ByokConnection.objects.filter(organization=org).first()
    if connection is None or connection.aws_account_id != request.aws_account_id:
        report = PreflightReport(checks=[_connection_failure(request, connection)])
    else:
        try:
            report = run_preflight_checks(
                org=org,
                role_arn=connection.role_arn,
                external_id=connection.external_id,
                location_code=request.location,
                alias=key_alias(),
                encryption_context=preflight_encryption_context(request),
                key_ids=_connected_keys(connection, request.location),
                trail=trail_of(org),
            )
        except Exception:
            # A bug or a database error, not an AWS answer: logged for us, plain words for them.
            logger.exception("Preflight #%s could not complete", preflight_run_id)
            report = PreflightReport(
                checks=[
                    Check(
                        "preflight",
                        "",
                        False,
                        "The preflight could not complete because of an error on our side.",
                        "Run the preflight again; if it fails again, contact support with this "
                        "preflight's number.",
                        CAUSE_INTERNAL,
                    )
                ]
            )
    return _finish(preflight_run_id, report, role_arn=connection.role_arn if connection else "")


@transaction.atomic
def _finish(preflight_run_id: int, report: PreflightReport, *, role_arn: str) -> PreflightRun:
    data = report.to_dict()
    run, saved = review.finish_run(
        model=PreflightRun,
        run_id=preflight_run_id,
        checks=data["checks"],
        key_arns=data["key_arns"],
        passed=report.passed,
        related=["request__organization"],
    )
    if not saved:
        return run  # another worker finished it first: its result stands
    request = run.request
    RequestEvent.objects.create(
        request=request, kind="preflight", message=f"#{run.pk}: {report.summary()}"
    )
    record_event(
        event_name="RunPreflight",
        org=request.organization,
        user_identity=user_identity_for(system=PREFLIGHT_WORKER),
        request_parameters={
            "setupRequestId": request.pk,
            "preflightRunId": run.pk,
            "location": request.location,
            "roleArn": role_arn,
        },
        response_elements={
            "outcome": run.status,
            "transient": report.transient,
            "failedChecks": [
                {"name": c.name, "region": c.region, "cause": c.cause} for c in report.failures
            ],
            "keyArns": dict(report.key_arns),
        },
        resources=[
            {"type": "AWS::KMS::Key", "ARN": arn, "accountId": arn.split(":")[4]}
            for arn in report.key_arns.values()
        ],
        recipient_account_id=request.aws_account_id,
    )
    return run


def trail_of(org) -> TrailLocation | None:
    """The org's enabled CloudTrail source, whose read access the preflight checks too."""
    source = CloudTrailSource.objects.filter(organization=org, enabled=True).first()
    if source is None:
        return None
    return TrailLocation(bucket=source.bucket, prefix=source.prefix, region=source.region)


def _connected_keys(connection: ByokConnection, location_code: str) -> dict[str, str] | None:
    """A connection that already has keys is checked on those keys, by ARN: after a
    re-encryption they are the new keys, whatever the setup alias still points to."""
    current = dict(connection.keys.filter(is_current=True).values_list("region", "key_arn"))
    regions = get_location(location_code).regions
    return current if all(r in current for r in regions) else None


def _connection_failure(request: SetupRequest, connection: ByokConnection | None) -> Check:
    if connection is None:
        detail = "The organization has no AWS connection on record for this request."
    else:
        detail = (
            f"The request names the AWS account {request.aws_account_id}, but the "
            f"organization's connection uses {connection.aws_account_id}."
        )
    return Check(
        CONNECTION,
        "",
        False,
        detail,
        "Correct the AWS account of the request or of the connection, then run the preflight "
        "again.",
        CAUSE_NO_CONNECTION,
    )


def latest_passing_preflight(
    setup_request: SetupRequest, max_age: timedelta = timedelta(hours=24)
) -> PreflightRun | None:
    """The request's most recent finished preflight if it passed within ``max_age``, else None.

    A pass followed by a later failure does not count: the newer result is what AWS says now.
    """
    return review.latest_passing_run(
        PreflightRun.objects.filter(request=setup_request), max_age=max_age
    )
