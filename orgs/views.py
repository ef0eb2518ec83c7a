from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from orgs import selectors
from orgs.eligibility import byok_eligibility


@login_required
def dashboard(request):
    orgs = selectors.dashboard_orgs(request.user)
    for org in orgs:
        org.eligibility = byok_eligibility(org)
    return render(request, "orgs/dashboard.html", {"orgs": orgs})


@login_required
def org_overview(request, org_id: int):
    org = selectors.org_overview(user=request.user, org_id=org_id)
    return render(
        request,
        "orgs/overview.html",
        {"org": org, "eligibility": byok_eligibility(org), "is_admin": org.user_role == "admin"},
    )
