"""Customer-facing BYOK pages. Thin: parse, call a service or selector, render."""

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from audit.request_context import client_ip
from keys import onboarding, reencryption, revocation, selectors, services
from keys.forms import (
    CancelReencryptionForm,
    ReencryptionRequestForm,
    RestoreAccessForm,
    RevokeAccessForm,
    SetupRequestForm,
)
from keys.lifecycle import TransitionNotAllowed
from keys.models import ConnectionState, ReencryptionRequest, SetupRequest
from orgs.eligibility import byok_eligibility
from orgs.permissions import org_admin_required
from security.decorators import otp_required_for_destructive, recent_auth_required


@org_admin_required
def byok_status(request, org):
    return render(request, "keys/byok_status.html", selectors.byok_status_context(org))


@org_admin_required
@require_http_methods(["GET", "POST"])
def setup_request_new(request, org):
    eligibility = byok_eligibility(org)
    if not eligibility:
        return render(request, "keys/not_eligible.html", {"org": org, "eligibility": eligibility})
    form = SetupRequestForm(request.POST or None, org=org)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            req = services.submit_setup_request(
                org=org,
                actor=request.user,
                aws_account_id=data["aws_account_id"],
                site_name=data["site_name"],
                location=data["location"],
                apps=data["apps"],
            )
        except services.RequestActionRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Setup request #{req.pk} submitted. Create the role and keys with the "
                "onboarding kit, then an account representative verifies them.",
            )
            return redirect("byok-request", org_id=org.pk, request_id=req.pk)
    return render(
        request,
        "keys/setup_form.html",
        {"org": org, "form": form, "open_requests": selectors.open_setup_requests_of(org)},
    )


@org_admin_required
def setup_request_detail(request, org, request_id: int):
    req = get_object_or_404(SetupRequest, organization=org, pk=request_id)
    return render(request, "keys/request_detail.html", selectors.request_context(req, staff=False))


@org_admin_required
def setup_request_preflight_fragment(request, org, request_id: int):
    req = get_object_or_404(SetupRequest, organization=org, pk=request_id)
    return render(
        request, "keys/partials/preflight_report.html", selectors.request_context(req, staff=False)
    )


@org_admin_required
@otp_required_for_destructive
@recent_auth_required
@require_http_methods(["GET", "POST"])
def revoke_access(request, org):
    connection = selectors.connection_of(org)
    if connection is None:
        raise Http404("No BYOK connection.")
    form = RevokeAccessForm(request.POST or None, org=org, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            revocation.revoke_key_access(
                org=org,
                actor=request.user,
                reason=form.cleaned_data["reason"],
                source_ip=client_ip(request),
            )
        except TransitionNotAllowed as exc:
            messages.error(request, str(exc))
        else:
            messages.warning(
                request, "Key access revoked. Every BYOK app is offline until you restore access."
            )
        return redirect("byok-revoke", org_id=org.pk)
    return render(
        request,
        "keys/revoke.html",
        {"org": org, "form": form, **selectors.revocation_context(connection)},
    )


@org_admin_required
def revoke_progress_fragment(request, org):
    connection = selectors.connection_of(org)
    if connection is None:
        raise Http404("No BYOK connection.")
    return render(
        request,
        "keys/partials/customer_side_ticks.html",
        {"org": org, **selectors.revocation_context(connection)},
    )


@org_admin_required
@require_http_methods(["GET", "POST"])
def restore_access(request, org):
    connection = selectors.connection_of(org)
    if connection is None:
        raise Http404("No BYOK connection.")
    form = RestoreAccessForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            revocation.request_restore(org=org, actor=request.user)
        except TransitionNotAllowed as exc:
            messages.error(request, str(exc))
        else:
            messages.info(request, "Checking your keys in every region…")
        return redirect("byok-restore", org_id=org.pk)
    template = (
        "keys/partials/restore_state.html" if request.GET.get("fragment") else "keys/restore.html"
    )
    return render(
        request,
        template,
        {"org": org, "form": form, **selectors.revocation_context(connection)},
    )


# --- Re-encryption -------------------------------------------------------------------------


def _connection_or_404(org):
    connection = selectors.connection_of(org)
    if connection is None:
        raise Http404("No BYOK connection.")
    return connection


@org_admin_required
@otp_required_for_destructive
@recent_auth_required
@require_http_methods(["GET", "POST"])
def reencrypt(request, org):
    """Request re-encryption under new keys; the open request's progress; the history.

    Like revoke, a key change wants two-factor and a recent sign-in (security.decorators).
    """
    connection = _connection_or_404(org)
    context = selectors.reencrypt_page_context(org, connection)
    can_request = connection.state == ConnectionState.ACTIVE and context["open_request"] is None
    form = ReencryptionRequestForm(
        request.POST if request.method == "POST" else None, connection=connection
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            req = reencryption.request_reencryption(
                org=org,
                actor=request.user,
                mode=data["mode"],
                key_arns=data["key_arns"],
                scheduled_for=data["scheduled_for"],
                window_timezone=data.get("window_timezone") or "",
                source_ip=client_ip(request),
            )
        except reencryption.ReencryptionRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Re-encryption request #{req.pk} submitted. An account representative checks "
                "your new keys before it is approved.",
            )
            return redirect("byok-reencrypt-detail", org_id=org.pk, request_id=req.pk)
    if context["open_request"] is not None:
        context.update(
            selectors.reencryption_progress_context(context["open_request"], staff=False)
        )
    return render(
        request, "keys/reencrypt.html", {**context, "form": form, "can_request": can_request}
    )


@org_admin_required
def reencrypt_detail(request, org, request_id: int):
    req = selectors.reencryption_request_of(org, request_id)
    context = selectors.reencryption_context(req, staff=False)
    context["cancel_form"] = CancelReencryptionForm()
    return render(request, "keys/reencrypt_detail.html", context)


@never_cache
@org_admin_required
def reencrypt_progress_fragment(request, org, request_id: int):
    req = selectors.reencryption_request_of(org, request_id)
    return render(
        request,
        "keys/partials/reencryption_progress.html",
        selectors.reencryption_progress_context(req, staff=False),
    )


@never_cache
@org_admin_required
def reencrypt_preflight_fragment(request, org, request_id: int):
    req = selectors.reencryption_request_of(org, request_id)
    return render(
        request,
        "keys/partials/preflight_report.html",
        selectors.reencryption_preflight_context(req, staff=False),
    )


@org_admin_required
@require_POST
def reencrypt_cancel(request, org, request_id: int):
    req = selectors.reencryption_request_of(org, request_id)
    form = CancelReencryptionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Tick the box to cancel the request.")
    else:
        try:
            reencryption.cancel_reencryption_request(org=org, request_id=req.pk, actor=request.user)
        except reencryption.ReencryptionRefused as exc:
            messages.error(request, str(exc))
        except ReencryptionRequest.DoesNotExist:
            raise Http404("No such request.") from None
        else:
            messages.info(request, f"Re-encryption request #{req.pk} cancelled.")
    return redirect("byok-reencrypt-detail", org_id=org.pk, request_id=req.pk)


@never_cache
@org_admin_required
def reencrypt_template_download(request, org, region: str):
    """The onboarding kit's replacement-keys template for one region (keys + alias only)."""
    connection = _connection_or_404(org)
    if region not in connection.location_info.regions:
        raise Http404("Not a region of your location.")
    template = onboarding.cloudformation_template(
        location_code=connection.location,
        account_id=connection.aws_account_id,
        external_id=connection.external_id,
        vendor_principal_arn=settings.VENDOR_PRINCIPAL_ARN,
        replacement=True,
        region=region,
        role_name=connection.role_name,
    )
    filename = onboarding.template_filename(
        location_code=connection.location, region=region, replacement=True
    )
    response = HttpResponse(onboarding.template_json(template), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
