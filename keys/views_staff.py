"""Account representatives' pages: the queue of setup requests and the actions on one."""

from django.contrib import messages
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from keys import reencryption, selectors, services
from keys.forms import InternalNoteForm, RejectRequestForm, StaffQueueFilterForm
from keys.models import ReencryptionRequest, SetupRequest
from keys.preflight import PreflightNotAllowed, start_preflight
from orgs.permissions import account_rep_required


@account_rep_required
def request_queue(request):
    form = StaffQueueFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    return render(
        request,
        "keys/staff_queue.html",
        {
            "form": form,
            "queue": selectors.staff_request_queue(**filters),
            "counts": selectors.staff_request_counts(),
            "reencryption_queue": selectors.staff_reencryption_queue(),
            "reencryption_counts": selectors.staff_reencryption_counts(),
        },
    )


@account_rep_required
def request_detail(request, request_id: int):
    req = get_object_or_404(SetupRequest.objects.select_related("organization"), pk=request_id)
    context = selectors.request_context(req, staff=True)
    context.update(reject_form=RejectRequestForm(), note_form=InternalNoteForm())
    return render(request, "keys/staff_request_detail.html", context)


@account_rep_required
def preflight_fragment(request, request_id: int):
    req = get_object_or_404(SetupRequest, pk=request_id)
    return render(
        request, "keys/partials/preflight_report.html", selectors.request_context(req, staff=True)
    )


def _perform(request, action, success: str, *, refused, missing, detail_url: str, request_id):
    """Run a rep's action; a refusal becomes an error message, then back to the detail page."""
    try:
        action()
    except refused as exc:
        messages.error(request, str(exc))
    except missing:
        return HttpResponseBadRequest("No such request.")
    else:
        messages.success(request, success)
    return redirect(detail_url, request_id=request_id)


def _run_action(request, request_id, action, success: str):
    return _perform(
        request,
        action,
        success,
        refused=(services.RequestActionRefused, PreflightNotAllowed),
        missing=SetupRequest.DoesNotExist,
        detail_url="staff-request-detail",
        request_id=request_id,
    )


@account_rep_required
@require_POST
def request_claim(request, request_id: int):
    return _run_action(
        request,
        request_id,
        lambda: services.claim_setup_request(request_id=request_id, rep=request.user),
        "Request claimed: it is yours now.",
    )


@account_rep_required
@require_POST
def request_preflight(request, request_id: int):
    def start():
        req = SetupRequest.objects.get(pk=request_id)
        start_preflight(setup_request=req, actor=request.user)

    return _run_action(request, request_id, start, "Preflight started.")


@account_rep_required
@require_POST
def request_provision(request, request_id: int):
    return _run_action(
        request,
        request_id,
        lambda: services.provision_setup_request(request_id=request_id, rep=request.user),
        "Provisioned. The apps become active once their first data key exists.",
    )


@account_rep_required
@require_POST
def request_reject(request, request_id: int):
    form = RejectRequestForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the customer a reason (at most 2,000 characters).")
        return redirect("staff-request-detail", request_id=request_id)
    return _run_action(
        request,
        request_id,
        lambda: services.reject_setup_request(
            request_id=request_id, rep=request.user, reason=form.cleaned_data["reason"]
        ),
        "Request rejected; the customer sees your reason.",
    )


@account_rep_required
@require_POST
def request_note(request, request_id: int):
    form = InternalNoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A note needs text (at most 4,000 characters).")
        return redirect("staff-request-detail", request_id=request_id)
    return _run_action(
        request,
        request_id,
        lambda: services.add_internal_note(
            request_id=request_id, actor=request.user, note=form.cleaned_data["note"]
        ),
        "Note added.",
    )


# --- Re-encryption requests ------------------------------------------------------------------


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
        passing_preflight=reencryption.passing_preflight(req),
    )
    return render(request, "keys/staff_reencryption_detail.html", context)


@never_cache
@account_rep_required
def reencryption_progress_fragment(request, request_id: int):
    return render(
        request,
        "keys/partials/reencryption_progress.html",
        selectors.reencryption_progress_context(_reencryption(request_id), staff=True),
    )


@never_cache
@account_rep_required
def reencryption_preflight_fragment(request, request_id: int):
    return render(
        request,
        "keys/partials/preflight_report.html",
        selectors.reencryption_preflight_context(_reencryption(request_id), staff=True),
    )


def _run_reencryption_action(request, request_id, action, success: str):
    return _perform(
        request,
        action,
        success,
        refused=reencryption.ReencryptionRefused,
        missing=ReencryptionRequest.DoesNotExist,
        detail_url="staff-reencryption-detail",
        request_id=request_id,
    )


@account_rep_required
@require_POST
def reencryption_claim(request, request_id: int):
    return _run_reencryption_action(
        request,
        request_id,
        lambda: reencryption.claim_reencryption_request(request_id=request_id, rep=request.user),
        "Request claimed: it is yours now.",
    )


@account_rep_required
@require_POST
def reencryption_preflight(request, request_id: int):
    return _run_reencryption_action(
        request,
        request_id,
        lambda: reencryption.start_reencryption_preflight(
            request_id=request_id, actor=request.user
        ),
        "Preflight of the new keys started.",
    )


@account_rep_required
@require_POST
def reencryption_approve(request, request_id: int):
    return _run_reencryption_action(
        request,
        request_id,
        lambda: reencryption.approve_reencryption_request(request_id=request_id, rep=request.user),
        "Approved: the re-encryption job is scheduled.",
    )


@account_rep_required
@require_POST
def reencryption_reject(request, request_id: int):
    form = RejectRequestForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the customer a reason (at most 2,000 characters).")
        return redirect("staff-reencryption-detail", request_id=request_id)
    return _run_reencryption_action(
        request,
        request_id,
        lambda: reencryption.reject_reencryption_request(
            request_id=request_id, rep=request.user, reason=form.cleaned_data["reason"]
        ),
        "Request rejected; the customer sees your reason.",
    )
