"""Account representatives' pages of one re-encryption request."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from orgs.permissions import account_rep_required
from reencryption import selectors, services
from reencryption.models import ReencryptionRequest
from review.forms import RejectRequestForm
from review.views import run_staff_action


def _reencryption(request_id: int) -> ReencryptionRequest:
    return get_object_or_404(
        ReencryptionRequest.objects.select_related("organization", "connection", "job"),
        pk=request_id,
    )


@account_rep_required
def reencryption_detail(request, request_id: int):
    req = _reencryption(request_id)
    context = selectors.reencryption_context(req, staff=True)
    context.update(
        reject_form=RejectRequestForm(),
        passing_preflight=services.passing_preflight(req),
    )
    return render(request, "reencryption/staff_reencryption_detail.html", context)


@never_cache
@account_rep_required
def reencryption_progress_fragment(request, request_id: int):
    return render(
        request,
        "reencryption/partials/reencryption_progress.html",
        selectors.reencryption_progress_context(_reencryption(request_id), staff=True),
    )


@never_cache
@account_rep_required
def reencryption_preflight_fragment(request, request_id: int):
    return render(
        request,
        "partials/preflight_report.html",
        selectors.reencryption_preflight_context(_reencryption(request_id), staff=True),
    )


def _run_reencryption_action(request, request_id, action, success: str):
    return run_staff_action(
        request,
        action,
        success,
        refused=services.ReencryptionRefused,
        missing=ReencryptionRequest.DoesNotExist,
        detail_url="reencryption:staff-detail",
        request_id=request_id,
    )


@account_rep_required
@require_POST
def reencryption_claim(request, request_id: int):
    return _run_reencryption_action(
        request,
        request_id,
        lambda: services.claim_reencryption_request(request_id=request_id, rep=request.user),
        "Request claimed: it is yours now.",
    )


@account_rep_required
@require_POST
def reencryption_preflight(request, request_id: int):
    return _run_reencryption_action(
        request,
        request_id,
        lambda: services.start_reencryption_preflight(request_id=request_id, actor=request.user),
        "Preflight of the new keys started.",
    )


@account_rep_required
@require_POST
def reencryption_approve(request, request_id: int):
    return _run_reencryption_action(
        request,
        request_id,
        lambda: services.approve_reencryption_request(request_id=request_id, rep=request.user),
        "Approved: the re-encryption job is scheduled.",
    )


@account_rep_required
@require_POST
def reencryption_reject(request, request_id: int):
    form = RejectRequestForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the customer a reason (at most 2,000 characters).")
        return redirect("reencryption:staff-detail", request_id=request_id)
    return _run_reencryption_action(
        request,
        request_id,
        lambda: services.reject_reencryption_request(
            request_id=request_id, rep=request.user, reason=form.cleaned_data["reason"]
        ),
        "Request rejected; the customer sees your reason.",
    )
