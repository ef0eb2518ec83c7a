from django.shortcuts import render

from audit import selectors
from orgs.permissions import org_admin_required


@org_admin_required
def org_audit(request, org):
    events = selectors.events_of(org)[:100]
    return render(request, "audit/event_list.html", {"org": org, "events": events})
