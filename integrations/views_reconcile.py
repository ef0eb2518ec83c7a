"""The unexplained-call alert: an org admin acknowledges it (the banner goes; audited)."""

from django.contrib import messages
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from audit.request_context import client_ip
from integrations import reconcile
from orgs.permissions import org_admin_required


@org_admin_required
@require_POST
def acknowledge_unexplained(request, org):
    """POST ``up_to``: the newest alert the admin was shown; later ones stay open."""
    try:
        up_to = int(request.POST.get("up_to", ""))
    except ValueError:
        messages.error(
            request, "That acknowledgement was not valid: reload the page and try again."
        )
        return redirect("audit:list", org_id=org.pk)
    try:
        count = reconcile.acknowledge_unexplained_calls(
            org=org, actor=request.user, up_to_id=up_to, source_ip=client_ip(request)
        )
    except reconcile.NothingToAcknowledge as exc:
        messages.info(request, str(exc))
    else:
        messages.success(
            request,
            f"Acknowledged {count} unexplained call{'s' if count != 1 else ''}. "
            "The alerts stay in the audit log.",
        )
    return redirect("audit:list", org_id=org.pk)
