"""Account representatives' pages of one setup request."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from orgs.permissions import account_rep_required
from review.forms import InternalNoteForm, RejectRequestForm
from review.views import reject_view, run_staff_action
from setup import selectors, services
from setup.models import SetupRequest
from setup.preflight import start_preflight


@account_rep_required
def request_detail(request, request_id: int):
    req = get_object_or_404(SetupRequest.objects.select_related("organization"), pk=request_id)
    context = selectors.request_context(req, staff=True)
    context.update(reject_form=RejectRequestForm(), note_form=InternalNoteForm())
    return render(request, "setup/staff_request_detail.html", context)


@account_rep_required
def preflight_fragment(request, request_id: int):
    req = get_object_or_404(SetupRequest, pk=request_id)
    return render(
        request, "partials/preflight_report.html", selectors.request_context(req, staff=True)
    )


DETAIL = "setup:staff-detail"


def _run_action(request, request_id: int, action, success: str):
    return run_staff_action(request, action, success, detail_url=DETAIL, request_id=request_id)


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
    req = get_object_or_404(SetupRequest, pk=request_id)

    def start():
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


request_reject = reject_view(services.reject_setup_request, detail_url=DETAIL)


@account_rep_required
@require_POST
def request_note(request, request_id: int):
    form = InternalNoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A note needs text (at most 4,000 characters).")
        return redirect(DETAIL, request_id=request_id)
    return _run_action(
        request,
        request_id,
        lambda: services.add_internal_note(
            request_id=request_id, actor=request.user, note=form.cleaned_data["note"]
        ),
        "Note added.",
    )
