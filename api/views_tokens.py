"""The org admin's API tokens page: list, create (the token is shown once), revoke. Thin.

Creating and revoking need the step-up of every sensitive action (two-factor session and a
recent sign-in); looking at the list does not.
"""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST

from api import selectors, services
from api.forms import ApiTokenForm
from audit.request_context import client_ip
from core.errors import NotAllowed
from orgs.permissions import org_admin_required
from security.decorators import otp_required_for_destructive, recent_auth_required

TEMPLATE = "api/tokens.html"


def _page(request, org, form, *, created=None, whole_token="", status=200):
    return render(
        request,
        TEMPLATE,
        {
            "org": org,
            "form": form,
            "tokens": selectors.tokens_of(org),
            "created": created,
            "whole_token": whole_token,
            "api_base": request.build_absolute_uri("/api/v1/"),
            "now": timezone.now(),
        },
        status=status,
    )


@never_cache
@sensitive_post_parameters()
@org_admin_required
@require_http_methods(["GET", "POST"])
def token_list(request, org):
    if request.method == "POST":
        return _create(request, org=org)
    return _page(request, org, ApiTokenForm())


@otp_required_for_destructive
@recent_auth_required
@sensitive_variables("whole")
def _create(request, org):
    form = ApiTokenForm(request.POST)
    if not form.is_valid():
        return _page(request, org, form, status=400)
    try:
        token, whole = services.create_api_token(
            org=org,
            actor=request.user,
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_at=form.expires_at(),
            source_ip=client_ip(request),
        )
    except NotAllowed as exc:
        form.add_error(None, str(exc))
        return _page(request, org, form, status=400)
    # Rendered, not redirected: the whole token exists only in this response.
    return _page(request, org, ApiTokenForm(), created=token, whole_token=whole)


@org_admin_required
@require_POST
def token_revoke(request, org, token_id: int):
    # Another org's token is a 404 before any step-up detour (which would hint it exists).
    selectors.get_token_of(org=org, token_id=token_id)
    return _revoke(request, org=org, token_id=token_id)


@otp_required_for_destructive
@recent_auth_required
def _revoke(request, org, token_id: int):
    try:
        token = services.revoke_api_token(
            org=org, token_id=token_id, actor=request.user, source_ip=client_ip(request)
        )
    except NotAllowed as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Token “{token.name}” revoked: it no longer works.")
    return redirect("api:tokens", org_id=org.pk)
