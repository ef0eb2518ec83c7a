"""Customer pages of re-encryption. Thin."""

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from audit.request_context import client_ip
from connections.models import ConnectionState
from connections.selectors import connection_of
from orgs.permissions import org_admin_required
from reencryption import selectors, services
from reencryption.forms import CancelReencryptionForm, ReencryptionRequestForm
from reencryption.models import ReencryptionRequest
from security.decorators import otp_required_for_destructive, recent_auth_required
from setup import onboarding


def _connection_or_404(org):
    connection = connection_of(org)
    if connection is None:
        raise Http404("No BYOK connection.")
    return connection


@org_admin_required
@otp_required_for_destructive
@recent_auth_required
@require_http_methods(["GET", "POST"])
def reencrypt(request, org):
    """Request re-encryption under new keys; the open request's progress; the history.

    Like revoke, a key change wants two-factor and a recent sign-in (security.decorators).
    """
    connection = _connection_or_404(org)
    context = selectors.reencrypt_page_context(org, connection)
    can_request = connection.state == ConnectionState.ACTIVE and context["open_request"] is None
    form = ReencryptionRequestForm(
        request.POST if request.method == "POST" else None, connection=connection
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            req = services.request_reencryption(
                org=org,
                actor=request.user,
                mode=data["mode"],
                key_arns=data["key_arns"],
                scheduled_for=data["scheduled_for"],
                window_timezone=data.get("window_timezone") or "",
                source_ip=client_ip(request),
            )
        except services.ReencryptionRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Re-encryption request #{req.pk} submitted. An account representative checks "
                "your new keys before it is approved.",
            )
            return redirect("reencryption:detail", org_id=org.pk, request_id=req.pk)
    if context["open_request"] is not None:
        context.update(
            selectors.reencryption_progress_context(context["open_request"], staff=False)
        )
    return render(
        request,
        "reencryption/reencrypt.html",
        {**context, "form": form, "can_request": can_request},
    )


@org_admin_required
def reencrypt_detail(request, org, request_id: int):
    req = selectors.reencryption_request_of(org, request_id)
    context = selectors.reencryption_context(req, staff=False)
    context["cancel_form"] = CancelReencryptionForm()
    return render(request, "reencryption/reencrypt_detail.html", context)


@never_cache
@org_admin_required
def reencrypt_progress_fragment(request, org, request_id: int):
    req = selectors.reencryption_request_of(org, request_id)
    return render(
        request,
        "reencryption/partials/reencryption_progress.html",
        selectors.reencryption_progress_context(req, staff=False),
    )


@never_cache
@org_admin_required
def reencrypt_preflight_fragment(request, org, request_id: int):
    req = selectors.reencryption_request_of(org, request_id)
    return render(
        request,
        "partials/preflight_report.html",
        selectors.reencryption_preflight_context(req, staff=False),
    )


@org_admin_required
@require_POST
def reencrypt_cancel(request, org, request_id: int):
    req = selectors.reencryption_request_of(org, request_id)
    form = CancelReencryptionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Tick the box to cancel the request.")
    else:
        try:
            services.cancel_reencryption_request(org=org, request_id=req.pk, actor=request.user)
        except services.ReencryptionRefused as exc:
            messages.error(request, str(exc))
        except ReencryptionRequest.DoesNotExist:
            raise Http404("No such request.") from None
        else:
            messages.info(request, f"Re-encryption request #{req.pk} cancelled.")
    return redirect("reencryption:detail", org_id=org.pk, request_id=req.pk)


@never_cache
@org_admin_required
def reencrypt_template_download(request, org, region: str):
    """The onboarding kit's replacement-keys template for one region (keys + alias only)."""
    connection = _connection_or_404(org)
    if region not in connection.location_info.regions:
        raise Http404("Not a region of your location.")
    template = onboarding.cloudformation_template(
        location_code=connection.location,
        account_id=connection.aws_account_id,
        external_id=connection.external_id,
        vendor_principal_arn=settings.VENDOR_PRINCIPAL_ARN,
        replacement=True,
        region=region,
        role_name=connection.role_name,
    )
    filename = onboarding.template_filename(
        location_code=connection.location, region=region, replacement=True
    )
    response = HttpResponse(onboarding.template_json(template), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
