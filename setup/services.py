"""Business actions on BYOK setup requests. One function per action, each in a transaction,
each writing its audit event; Celery work is enqueued on commit."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from connections.lifecycle import transition
from connections.models import ByokConnection, ConnectionState, RegionalKey
from core.errors import NotAllowed
from core.tasks import enqueue_on_commit
from orgs.models import AppInstance, Organization, Site
from review import services as review
from setup import notifications
from setup.models import RequestEvent, SetupRequest
from setup.preflight import latest_passing_preflight


class RequestActionRefused(NotAllowed):
    """A request action refused for a reason the actor can read."""


def _request_resources(req: SetupRequest) -> list[dict]:
    return [{"type": "BYOK::SetupRequest", "ARN": f"setup-request/{req.pk}"}]


@transaction.atomic
def submit_setup_request(
    *, org: Organization, actor, aws_account_id: str, site_name: str, location: str, apps: list[str]
) -> SetupRequest:
    """An org admin asks for BYOK. Creates the org's pending connection (and so its external
    ID, needed by the onboarding kit) on the first request."""
    # Serialise requests of one org so two tabs cannot create two connections.
    Organization.objects.select_for_update(no_key=True).get(pk=org.pk)
    connection, created = ByokConnection.objects.get_or_create(
        organization=org,
        defaults={
            "aws_account_id": aws_account_id,
            "location": location,
            "role_name": settings.BYOK_ROLE_NAME,
        },
    )
    if connection.aws_account_id != aws_account_id or connection.location != location:
        raise RequestActionRefused(
            "The AWS account and location must match your organization's existing BYOK connection."
        )
    req = SetupRequest.objects.create(
        organization=org,
        requested_by=actor,
        aws_account_id=aws_account_id,
        site_name=site_name,
        location=location,
        apps=sorted(set(apps)),
    )
    RequestEvent.objects.create(
        request=req, kind="submitted", actor=actor, message="Setup requested."
    )
    record_event(
        org=org,
        actor=actor,
        event_name="RequestByokSetup",
        request_parameters={
            "awsAccountId": aws_account_id,
            "siteName": site_name,
            "location": location,
            "apps": req.apps,
        },
        response_elements={"requestId": req.pk, "connectionCreated": created},
        resources=_request_resources(req),
        recipient_account_id=aws_account_id,
    )
    transaction.on_commit(lambda: notifications.request_submitted(req.pk))
    return req


def _locked_request(request_id: int) -> SetupRequest:
    return review.lock_request(model=SetupRequest, request_id=request_id)


def _notify_closed(req: SetupRequest) -> None:
    notifications.request_closed(req.pk)


def claim_setup_request(*, request_id: int, rep) -> SetupRequest:
    """Assign a request to one rep. Two reps racing: the second gets a clear refusal."""
    return review.claim_request(
        model=SetupRequest,
        timeline=RequestEvent,
        request_id=request_id,
        rep=rep,
        audit_event="ClaimByokSetupRequest",
        resources=_request_resources,
        refused=RequestActionRefused,
    )


def add_internal_note(*, request_id: int, actor, note: str) -> RequestEvent:
    return review.add_internal_note(
        model=SetupRequest,
        timeline=RequestEvent,
        request_id=request_id,
        actor=actor,
        note=note,
        resources=_request_resources,
    )


def reject_setup_request(*, request_id: int, rep, reason: str) -> SetupRequest:
    return review.reject_request(
        model=SetupRequest,
        timeline=RequestEvent,
        request_id=request_id,
        rep=rep,
        reason=reason,
        audit_event="RejectByokSetupRequest",
        resources=_request_resources,
        notify=_notify_closed,
        refused=RequestActionRefused,
    )


@transaction.atomic
def provision_setup_request(*, request_id: int, rep) -> SetupRequest:
    """Connect the org's keys, create the site and its BYOK app instances, close the request.

    App instances start *provisioning* and become active once their first data key exists
    (a task enqueued on commit).
    """
    req = _locked_request(request_id)
    review.require_assignee(req, rep, refused=RequestActionRefused)
    preflight = latest_passing_preflight(
        req, max_age=timedelta(hours=settings.PREFLIGHT_MAX_AGE_HOURS)
    )
    if preflight is None:
        raise RequestActionRefused(
            "Provisioning needs a passing preflight from the last "
            f"{settings.PREFLIGHT_MAX_AGE_HOURS} hours. Run the preflight again."
        )
    org = req.organization
    connection = ByokConnection.objects.select_for_update(no_key=True).get(organization=org)
    if connection.state == ConnectionState.PENDING:
        transition(connection, ConnectionState.ACTIVE, reason="Provisioned.")
    elif connection.state not in (ConnectionState.ACTIVE, ConnectionState.DEGRADED):
        raise RequestActionRefused(
            f"The organization's key connection is {connection.get_state_display().lower()}; "
            "new apps cannot be provisioned until it is active."
        )
    _attach_regional_keys(connection, preflight.key_arns)

    site, site_created = Site.objects.get_or_create(
        name=req.site_name, defaults={"organization": org}
    )
    if site.organization_id != org.pk:
        raise RequestActionRefused(f"The site name {req.site_name} was taken in the meantime.")
    created = []
    for app in req.apps:
        instance, was_created = AppInstance.objects.get_or_create(
            site=site,
            app=app,
            defaults={
                "encryption": AppInstance.Encryption.BYOK,
                "status": AppInstance.Status.PROVISIONING,
            },
        )
        if not was_created:
            raise RequestActionRefused(
                f"{instance.get_app_display()} already exists on {site.name}; reject or ask the "
                "customer for a new request."
            )
        created.append(instance)

    apps_label = ", ".join(i.get_app_display() for i in created)
    review.close_request(
        req,
        status=SetupRequest.Status.PROVISIONED,
        timeline=RequestEvent,
        kind="provisioned",
        actor=rep,
        message=f"Provisioned {apps_label} on {site.name}"
        + (" (new site)." if site_created else "."),
    )
    record_event(
        org=org,
        actor=rep,
        event_name="ProvisionByokApps",
        request_parameters={"requestId": req.pk, "siteName": site.name, "apps": req.apps},
        response_elements={
            "appInstanceIds": [i.pk for i in created],
            "siteCreated": site_created,
            "connectionState": connection.state,
        },
        resources=_request_resources(req)
        + [
            {"type": "AWS::KMS::Key", "ARN": k.key_arn}
            for k in connection.keys.filter(is_current=True)
        ],
        recipient_account_id=connection.aws_account_id,
    )
    ids = [i.pk for i in created]

    enqueue_on_commit("setup.tasks.activate_app_instances", ids)
    transaction.on_commit(lambda: _notify_closed(req))
    return req


def _attach_regional_keys(connection: ByokConnection, key_arns: dict[str, str]) -> None:
    location = connection.location_info
    missing = [r for r in location.regions if r not in key_arns]
    if missing:
        raise RequestActionRefused(f"The preflight found no key in {', '.join(missing)}.")
    for region in location.regions:
        current = connection.keys.filter(region=region, is_current=True).first()
        if current is not None and current.key_arn == key_arns[region]:
            continue
        if current is not None:
            # An org's data is already encrypted under its current key; swapping keys is a
            # re-encryption, not a setup. Refuse rather than orphan existing data keys.
            raise RequestActionRefused(
                f"The key in {region} differs from the organization's connected key "
                f"({current.key_arn}). Changing keys needs a re-encryption request."
            )
        RegionalKey.objects.create(
            connection=connection,
            region=region,
            key_arn=key_arns[region],
            alias="alias/byok-key-management",
            status=RegionalKey.Status.ENABLED,
            last_checked_at=timezone.now(),
        )
