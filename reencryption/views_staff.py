"""Account representatives' pages of one re-encryption request."""

from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from orgs.permissions import account_rep_required
from reencryption import selectors, services
from reencryption.models import ReencryptionRequest
from review.forms import RejectRequestForm
from review.views import reject_view, run_staff_action


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


DETAIL = "reencryption:staff-detail"


def _run_reencryption_action(request, request_id: int, action, success: str):
    return run_staff_action(request, action, success, detail_url=DETAIL, request_id=request_id)


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


reencryption_reject = reject_view(services.reject_reencryption_request, detail_url=DETAIL)
