from django.shortcuts import render

from keys import selectors
from orgs.models import AppInstance
from orgs.permissions import account_rep_required, org_admin_required


@org_admin_required
def byok_status(request, org):
    connection = selectors.connection_of(org)
    byok_apps = AppInstance.objects.filter(
        site__organization=org, encryption=AppInstance.Encryption.BYOK
    ).select_related("site")
    return render(
        request,
        "keys/byok_status.html",
        {
            "org": org,
            "connection": connection,
            "byok_apps": byok_apps,
            "setup_requests": selectors.setup_requests_of(org)[:20],
        },
    )


@account_rep_required
def staff_requests(request):
    queue = selectors.staff_request_queue(status=request.GET.get("status") or None)
    return render(request, "keys/staff_requests.html", {"queue": queue})
