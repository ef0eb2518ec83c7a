"""View decorators: who may see which pages. Object scoping itself lives in the selectors."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from orgs.models import Membership
from orgs.selectors import get_org_with_role


def org_admin_required(view):
    """Org admins only. Outsiders get 404 (no hint the org exists); members get 403.

    The view receives the organization as ``org`` instead of ``org_id``.
    """

    @login_required
    @wraps(view)
    def wrapper(request, org_id, *args, **kwargs):
        org, role = get_org_with_role(user=request.user, org_id=org_id)
        if role != Membership.Role.ADMIN:
            raise PermissionDenied("Only organization admins can manage encryption keys.")
        return view(request, *args, org=org, **kwargs)

    return wrapper


def account_rep_required(view):
    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_account_rep:
            raise PermissionDenied("Only account representatives can process requests.")
        return view(request, *args, **kwargs)

    return wrapper
