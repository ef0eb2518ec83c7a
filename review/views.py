"""The account representatives' queue of both request kinds, and the shared action wrapper."""

from django.contrib import messages
from django.http import HttpResponseBadRequest
from django.shortcuts import redirect, render

from core.errors import NotAllowed, NotFound
from orgs.permissions import account_rep_required
from review import kinds


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


def run_staff_action(
    request,
    action,
    success: str,
    *,
    detail_url: str,
    request_id,
    refused=NotAllowed,
    missing=(),
):
    """Run a rep's action; a refusal (``NotAllowed``) becomes an error message, then back to
    the detail page. A missing request (``NotFound``, or ``missing``) is a bad request."""
    try:
        action()
    except (NotFound, *_classes(missing)):
        return HttpResponseBadRequest("No such request.")
    except refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, success)
    return redirect(detail_url, request_id=request_id)


def _classes(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)
