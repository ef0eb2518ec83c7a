"""Customer-facing BYOK pages. Thin: parse, call a service or selector, render."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from audit.request_context import client_ip
from keys import revocation, selectors, services
from keys.forms import RestoreAccessForm, RevokeAccessForm, SetupRequestForm
from keys.lifecycle import TransitionNotAllowed
from keys.models import SetupRequest
from orgs.eligibility import byok_eligibility
from orgs.permissions import org_admin_required


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
