"""Audit integrations: the customer's CloudTrail source, the SIEM webhook, and the public key.

``/orgs/<org_id>/audit/integrations/`` is for org admins (members 403, outsiders 404). The
portal's public signing key and the offline verifier are public: customers fetch them to
check exports, with no login.
"""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from audit import digests, webhooks
from audit.request_context import client_ip
from connections.selectors import connection_of
from core.errors import NotAllowed
from integrations import ingestion
from integrations.forms import CloudTrailSourceForm, WebhookForm
from orgs.permissions import org_admin_required
from setup import onboarding
from setup.preflight import trail_of

TEMPLATE = "integrations/integrations.html"
LOG_SIZE = 50


def _context(org, *, source_form=None, webhook_form=None) -> dict:
    source = ingestion.source_of(org)
    endpoint = webhooks.endpoint_of(org)
    connection = connection_of(org)
    if source_form is None:
        if source is not None:
            initial = {
                "bucket": source.bucket,
                "prefix": source.prefix,
                "region": source.region,
                "scope": source.scope,
                "enabled": source.enabled,
            }
        else:
            region = connection.location_info.primary_region if connection else ""
            initial = {"region": region, "scope": "byok", "enabled": True}
        source_form = CloudTrailSourceForm(initial=initial)
    if webhook_form is None:
        initial = (
            {"url": endpoint.url, "enabled": endpoint.enabled} if endpoint else {"enabled": True}
        )
        webhook_form = WebhookForm(initial=initial, has_secret=endpoint is not None)
    try:
        key_id = digests.current_key_id()
    except digests.SigningKeyMissing:
        key_id = ""
    return {
        "org": org,
        "connection": connection,
        "source": source,
        "source_form": source_form,
        "files": ingestion.recent_files_of(org, limit=LOG_SIZE) if source else [],
        "endpoint": endpoint,
        "webhook_form": webhook_form,
        "deliveries": webhooks.recent_deliveries_of(org, limit=LOG_SIZE) if endpoint else [],
        "key_id": key_id,
        "latest_digest": digests.latest_digest_of(org),
        "trail_policy": onboarding.trail_policy_for(
            role_name=connection.role_name, trail=trail_of(org)
        )
        if connection
        else None,
        "log_size": LOG_SIZE,
    }


def _back(org):
    return redirect("integrations:index", org_id=org.pk)


def _act(request, org, action, success: str):
    """Run an admin's action, then back to the page: a refusal becomes an error message."""
    try:
        action()
    except NotAllowed as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, success)
    return _back(org)


@org_admin_required
@require_GET
def integrations(request, org):
    return render(request, TEMPLATE, _context(org))


@org_admin_required
@require_POST
def source_save(request, org):
    form = CloudTrailSourceForm(request.POST)
    if form.is_valid():
        try:
            ingestion.configure_cloudtrail_source(
                org=org, actor=request.user, source_ip=client_ip(request), **form.cleaned_data
            )
        except ingestion.IngestionRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "CloudTrail source saved. New log files are imported.")
            return _back(org)
    return render(request, TEMPLATE, _context(org, source_form=form), status=400)


@org_admin_required
@require_POST
def source_import(request, org):
    return _act(
        request,
        org,
        lambda: ingestion.request_import(org=org, actor=request.user, source_ip=client_ip(request)),
        "Import started: new log files appear below.",
    )


@sensitive_post_parameters("secret")
@org_admin_required
@require_POST
def webhook_save(request, org):
    endpoint = webhooks.endpoint_of(org)
    form = WebhookForm(request.POST, has_secret=endpoint is not None)
    if form.is_valid():
        try:
            webhooks.configure_webhook(
                org=org, actor=request.user, source_ip=client_ip(request), **form.cleaned_data
            )
        except webhooks.WebhookRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Webhook saved. The secret is stored encrypted.")
            return _back(org)
    return render(request, TEMPLATE, _context(org, webhook_form=form), status=400)


@org_admin_required
@require_POST
def webhook_test(request, org):
    return _act(
        request,
        org,
        lambda: webhooks.send_test_event(org=org, actor=request.user, source_ip=client_ip(request)),
        "Test event sent: its delivery is at the top of the log.",
    )


@org_admin_required
@require_POST
def webhook_delete(request, org):
    return _act(
        request,
        org,
        lambda: webhooks.remove_webhook(org=org, actor=request.user, source_ip=client_ip(request)),
        "Webhook removed, with its delivery log.",
    )


@org_admin_required
@require_POST
def delivery_retry(request, org, delivery_id: int):
    return _act(
        request,
        org,
        lambda: webhooks.retry_delivery(
            org=org, actor=request.user, delivery_id=delivery_id, source_ip=client_ip(request)
        ),
        "Delivery queued again.",
    )
