"""Customer pages of setup requests. Thin."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from orgs.eligibility import byok_eligibility
from orgs.permissions import org_admin_required
from setup import selectors, services
from setup.forms import SetupRequestForm
from setup.models import SetupRequest


@org_admin_required
@require_http_methods(["GET", "POST"])
def setup_request_new(request, org):
    eligibility = byok_eligibility(org)
    if not eligibility:
        return render(request, "setup/not_eligible.html", {"org": org, "eligibility": eligibility})
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
            return redirect("setup:request", org_id=org.pk, request_id=req.pk)
    return render(
        request,
        "setup/setup_form.html",
        {"org": org, "form": form, "open_requests": selectors.open_setup_requests_of(org)},
    )


@org_admin_required
def setup_request_detail(request, org, request_id: int):
    req = get_object_or_404(SetupRequest, organization=org, pk=request_id)
    return render(request, "setup/request_detail.html", selectors.request_context(req, staff=False))


@org_admin_required
def setup_request_preflight_fragment(request, org, request_id: int):
    req = get_object_or_404(SetupRequest, organization=org, pk=request_id)
    return render(
        request, "partials/preflight_report.html", selectors.request_context(req, staff=False)
    )
