"""Customer pages of the BYOK connection: status, revoke, restore. Thin."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from audit.request_context import client_ip
from connections import selectors, services
from connections.forms import RestoreAccessForm, RevokeAccessForm
from connections.lifecycle import TransitionNotAllowed
from orgs.permissions import org_admin_required
from security.decorators import otp_required_for_destructive, recent_auth_required


@org_admin_required
def byok_status(request, org):
    return render(request, "connections/byok_status.html", selectors.byok_status_context(org))


@org_admin_required
@require_POST
def check_now(request, org):
    if selectors.connection_of(org) is None:
        raise Http404("No BYOK connection.")
    services.request_read_checks(org=org, actor=request.user, source_ip=client_ip(request))
    messages.info(request, "Reading one record of each BYOK app now; refresh in a few seconds.")
    return redirect("connections:status", org_id=org.pk)


@sensitive_post_parameters("password")
@org_admin_required
@otp_required_for_destructive
@recent_auth_required
@require_http_methods(["GET", "POST"])
def revoke_access(request, org):
    connection = selectors.connection_of(org)
    if connection is None:
        raise Http404("No BYOK connection.")
    form = RevokeAccessForm(request.POST or None, org=org, user=request.user, request=request)
    if request.method == "POST" and form.is_valid():
        try:
            services.revoke_key_access(
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
        return redirect("connections:revoke", org_id=org.pk)
    return render(
        request,
        "connections/revoke.html",
        {"org": org, "form": form, **selectors.revocation_context(connection)},
    )


@org_admin_required
def revoke_progress_fragment(request, org):
    connection = selectors.connection_of(org)
    if connection is None:
        raise Http404("No BYOK connection.")
    return render(
        request,
        "connections/partials/customer_side_ticks.html",
        {"org": org, **selectors.revocation_context(connection)},
    )


@sensitive_post_parameters("password")
@org_admin_required
@require_http_methods(["GET", "POST"])
def restore_access(request, org):
    """The restore page. Its status fragment (polled while the checks run) only reads; the
    page and its form need the same step-up as revoke (lifecycle.StepUp.DESTRUCTIVE)."""
    connection = selectors.connection_of(org)
    if connection is None:
        raise Http404("No BYOK connection.")
    if request.method == "GET" and request.GET.get("fragment"):
        return render(
            request,
            "connections/partials/restore_state.html",
            {"org": org, **selectors.revocation_context(connection)},
        )
    return _restore_with_step_up(request, org, connection)


@otp_required_for_destructive
@recent_auth_required
def _restore_with_step_up(request, org, connection):
    form = RestoreAccessForm(request.POST or None, org=org, user=request.user, request=request)
    if request.method == "POST" and form.is_valid():
        try:
            services.request_restore(org=org, actor=request.user)
        except TransitionNotAllowed as exc:
            messages.error(request, str(exc))
        else:
            messages.info(request, "Checking your keys in every region…")
        return redirect("connections:restore", org_id=org.pk)
    return render(
        request,
        "connections/restore.html",
        {"org": org, "form": form, **selectors.revocation_context(connection)},
    )
