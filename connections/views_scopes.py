"""Customer pages of scoped revocation: revoke one site, one app instance or one period of data,
and restore one scope. Thin; the same step-up as the org-wide kill switch (two-factor, a
recent sign-in, the password and the org's name typed). A GET shows the confirmation page and
changes nothing; only a POST (CSRF-checked) acts."""

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from audit.request_context import client_ip
from connections import selectors, services
from connections.forms import RestoreScopeForm, RevokeAccessForm, RevokePeriodForm
from connections.lifecycle import TransitionNotAllowed
from connections.scope_lifecycle import scope_flags
from core.errors import NotAllowed
from orgs.permissions import org_admin_required
from security.decorators import otp_required_for_destructive, recent_auth_required


def _org_admin_page(view):
    """Org admins only; GET (the confirmation page) or POST (the action)."""
    view = require_http_methods(["GET", "POST"])(view)
    view = org_admin_required(view)
    return sensitive_post_parameters("password")(view)


@otp_required_for_destructive
@recent_auth_required
def _revoke(request, org, *, scope, form_class, what: str, template_context: dict):
    """The kill switch's step-up, once the scope's object is known to be the org's (another
    org's object is a 404 before any step-up detour)."""
    form = form_class(request.POST or None, org=org, user=request.user, request=request)
    if request.method == "POST" and form.is_valid():
        try:
            revocation = services.revoke_scope(
                org=org,
                actor=request.user,
                scope=scope(form.cleaned_data),
                reason=form.cleaned_data["reason"],
                source_ip=client_ip(request),
            )
        except NotAllowed as exc:  # TransitionNotAllowed or InvalidScope: said as is
            form.add_error(None, str(exc))
        else:
            messages.warning(
                request,
                f"Key access revoked for {revocation.label}. Everything else keeps working; "
                f"you can restore it until {revocation.restore_deadline:%d %B %Y %H:%M} UTC.",
            )
            return redirect("connections:status", org_id=org.pk)
    connection = selectors.connection_of(org)
    return render(
        request,
        "connections/scope_revoke.html",
        {
            "org": org,
            "form": form,
            "what": what,
            "connection": connection,
            "restore_days": settings.BYOK_RESTORE_WINDOW_DAYS,
            **template_context,
        },
    )


@_org_admin_page
def revoke_site(request, org, site_id: int):
    site = selectors.get_site_of(org, site_id)
    return _revoke(
        request,
        org,
        scope=lambda _data: services.Scope.site(site.pk),
        form_class=RevokeAccessForm,
        what=f"site {site.name}",
        template_context={"site": site, "apps": site.app_instances.filter(encryption="byok")},
    )


@_org_admin_page
def revoke_app(request, org, app_id: int):
    app = selectors.get_app_of(org, app_id)
    return _revoke(
        request,
        org,
        scope=lambda _data: services.Scope.app(app.pk),
        form_class=RevokeAccessForm,
        what=f"{app.get_app_display()} on {app.site.name}",
        template_context={"app": app},
    )


@_org_admin_page
def revoke_period(request, org):
    return _revoke(
        request,
        org,
        scope=lambda data: services.Scope.period(data["period_from"], data["period_to"]),
        form_class=RevokePeriodForm,
        what="a period of data",
        template_context={"period": True},
    )


@_org_admin_page
def restore_scope(request, org, revocation_id: int):
    revocation = selectors.get_scoped_revocation(org, revocation_id)
    return _restore(request, org, revocation)


@otp_required_for_destructive
@recent_auth_required
def _restore(request, org, revocation):
    form = RestoreScopeForm(request.POST or None, org=org, user=request.user, request=request)
    if request.method == "POST" and form.is_valid():
        try:
            services.restore_scope(
                org=org,
                actor=request.user,
                revocation_id=revocation.pk,
                source_ip=client_ip(request),
            )
        except TransitionNotAllowed as exc:
            messages.error(request, str(exc))
        else:
            messages.info(request, f"Checking your keys for {revocation.label}…")
        return redirect("connections:status", org_id=org.pk)
    return render(
        request,
        "connections/scope_restore.html",
        {
            "org": org,
            "form": form,
            "revocation": revocation,
            "flags": scope_flags(revocation),
            "restore_days": settings.BYOK_RESTORE_WINDOW_DAYS,
        },
    )
