"""The account representatives' queue of both request kinds, and the actions they share."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.errors import NotAllowed
from orgs.permissions import account_rep_required
from review import kinds
from review.forms import RejectRequestForm


@account_rep_required
def request_queue(request):
    context = {}
    for kind in kinds.registered():
        filters = {}
        if kind.filter_form is not None:
            form = kind.filter_form(request.GET or None)
            filters = form.cleaned_data if form.is_valid() else {}
            context["form"] = form
        context[f"{kind.key}_queue"] = kind.queue(**filters)
        context[f"{kind.key}_counts"] = kind.counts()
    return render(request, "review/staff_queue.html", context)


def run_staff_action(request, action, success: str, *, detail_url: str, request_id: int):
    """Run a rep's action, then back to the request's page: a refusal (``NotAllowed``) becomes
    an error message; a missing request (``NotFound``) a 404, through core's middleware."""
    try:
        action()
    except NotAllowed as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, success)
    return redirect(detail_url, request_id=request_id)


def reject_view(reject_request, *, detail_url: str):
    """The rep's "Reject" POST for one request kind (the service takes request_id, rep, reason)."""

    @account_rep_required
    @require_POST
    def reject(request, request_id: int):
        form = RejectRequestForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Give the customer a reason (at most 2,000 characters).")
            return redirect(detail_url, request_id=request_id)
        return run_staff_action(
            request,
            lambda: reject_request(
                request_id=request_id, rep=request.user, reason=form.cleaned_data["reason"]
            ),
            "Request rejected; the customer sees your reason.",
            detail_url=detail_url,
            request_id=request_id,
        )

    return reject
