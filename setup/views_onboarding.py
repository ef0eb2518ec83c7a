"""The onboarding kit of a setup request: what the customer deploys in their AWS account.

Thin views over :mod:`setup.onboarding`. Both are scoped to the org the decorator resolved:
another org's request, or an org without a BYOK connection (so no external ID yet), is a 404.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.cache import never_cache

from connections.models import ByokConnection
from orgs.models import AppInstance
from orgs.permissions import org_admin_required
from setup import onboarding, scope_policies
from setup.models import SetupRequest
from setup.preflight import trail_of


def _request_and_connection(org, request_id: int) -> tuple[SetupRequest, ByokConnection]:
    req = get_object_or_404(SetupRequest.objects.filter(organization=org, pk=request_id))
    try:
        connection = org.byok_connection
    except ByokConnection.DoesNotExist:
        raise Http404("No BYOK connection for this organization.") from None
    return req, connection


def _kit_arguments(req: SetupRequest, connection: ByokConnection) -> dict:
    # The request fixes account and location; the connection holds the ExternalId and role;
    # the org's CloudTrail source (if any) prefills the role's trail read permissions.
    trail = trail_of(req.organization)
    return {
        "location_code": req.location,
        "account_id": req.aws_account_id,
        "external_id": connection.external_id,
        "vendor_principal_arn": settings.VENDOR_PRINCIPAL_ARN,
        "role_name": connection.role_name,
        "trail_bucket": trail.bucket if trail else "",
        "trail_prefix": trail.prefix if trail else "",
    }


def byok_sites_of(org, *, also: tuple[str, list[str]]) -> dict[str, list[str]]:
    """Site name → its BYOK apps, plus the request's own site and apps (not provisioned yet)."""
    sites: dict[str, set[str]] = {also[0]: set(also[1])}
    for site, app in AppInstance.objects.filter(
        site__organization=org, encryption=AppInstance.Encryption.BYOK
    ).values_list("site__name", "app"):
        sites.setdefault(site, set()).add(app)
    return {site: sorted(apps) for site, apps in sites.items()}


@never_cache
@org_admin_required
def onboarding_kit(request, org, request_id: int):
    req, connection = _request_and_connection(org, request_id)
    location = req.location_info
    regions = [
        {
            "name": region,
            "is_primary": region == location.primary_region,
            "creates_role": onboarding.creates_role(location_code=req.location, region=region),
            "download_url": reverse("setup:kit-template", args=[org.pk, req.pk, region]),
            "filename": onboarding.template_filename(location_code=req.location, region=region),
            "command": onboarding.deploy_command(location_code=req.location, region=region),
        }
        for region in location.regions
    ]
    trail = trail_of(org)
    policies = onboarding.policies_json(
        account_id=req.aws_account_id,
        external_id=connection.external_id,
        vendor_principal_arn=settings.VENDOR_PRINCIPAL_ARN,
        role_name=connection.role_name,
    )
    return render(
        request,
        "setup/onboarding_kit.html",
        {
            "org": org,
            "req": req,
            "location": location,
            "external_id": connection.external_id,
            "role_name": connection.role_name,
            "role_arn": onboarding.role_arn_for(req.aws_account_id, connection.role_name),
            "vendor_principal_arn": settings.VENDOR_PRINCIPAL_ARN,
            "key_alias": onboarding.KEY_ALIAS,
            "key_actions": onboarding.VENDOR_KEY_ACTIONS,
            "regions": regions,
            "trust_policy_json": policies["trust_policy"],
            "key_policy_json": policies["key_policy"],
            "trail": trail,
            "trail_actions": onboarding.TRAIL_READ_ACTIONS,
            "trail_parameter": onboarding.TRAIL_BUCKET_PARAMETER,
            "trail_policy": onboarding.trail_policy_for(
                role_name=connection.role_name, trail=trail
            ),
            "scope_denies": scope_policies.scope_denies_for(
                role_arn=onboarding.role_arn_for(req.aws_account_id, connection.role_name),
                org_id=org.pk,
                sites=byok_sites_of(org, also=(req.site_name, req.apps)),
            ),
            "put_key_policy_commands": [
                scope_policies.put_key_policy_command(region=r) for r in location.regions
            ],
        },
    )


@never_cache
@org_admin_required
def onboarding_template_download(request, org, request_id: int, region: str):
    req, connection = _request_and_connection(org, request_id)
    if region not in req.location_info.regions:
        raise Http404("Not a region of this request's location.")
    template = onboarding.cloudformation_template(region=region, **_kit_arguments(req, connection))
    filename = onboarding.template_filename(location_code=req.location, region=region)
    response = HttpResponse(onboarding.template_json(template), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
