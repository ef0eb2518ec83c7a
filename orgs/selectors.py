"""Tenant-scoped reads: every customer-facing query starts from the user."""

from django.db.models import Prefetch, QuerySet
from django.http import Http404

from orgs.models import AppInstance, Membership, Organization, Site


def orgs_of(user) -> QuerySet[Organization]:
    """Organizations the user belongs to, in any role."""
    if not user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(memberships__user=user).distinct()


def orgs_administered_by(user) -> QuerySet[Organization]:
    if not user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(
        memberships__user=user, memberships__role=Membership.Role.ADMIN
    ).distinct()


def role_in(*, user, org: Organization) -> str | None:
    return (
        Membership.objects.filter(user=user, organization=org)
        .values_list("role", flat=True)
        .first()
    )


def get_org_for_member(*, user, org_id: int) -> Organization:
    """The org if the user belongs to it; 404 otherwise (the same answer as a missing org)."""
    org = orgs_of(user).filter(pk=org_id).first()
    if org is None:
        raise Http404("No such organization.")
    return org


def get_org_with_role(*, user, org_id: int) -> tuple[Organization, str]:
    """The org and the user's role in it, in one query; 404 if the user is not in it (the
    same answer as a missing org)."""
    if not user.is_authenticated:
        raise Http404("No such organization.")
    membership = (
        Membership.objects.filter(user=user, organization_id=org_id)
        .select_related("organization")
        .order_by("pk")
        .first()
    )
    if membership is None:
        raise Http404("No such organization.")
    return membership.organization, membership.role


def get_org_for_admin(*, user, org_id: int) -> Organization:
    """The org if the user administers it; 404 if the user is not in it at all.

    A plain member of the org gets ``PermissionDenied`` from the view decorator instead:
    they already know the org exists, so 403 leaks nothing.
    """
    org = orgs_administered_by(user).filter(pk=org_id).first()
    if org is None:
        raise Http404("No such organization.")
    return org


def sites_with_apps() -> Prefetch:
    return Prefetch(
        "sites",
        queryset=Site.objects.order_by("name").prefetch_related(
            Prefetch("app_instances", queryset=AppInstance.objects.order_by("app"))
        ),
    )


def dashboard_orgs(user) -> list[Organization]:
    """The user's orgs with their sites and app instances, and the user's role in each."""
    orgs = list(orgs_of(user).order_by("name").prefetch_related(sites_with_apps()))
    roles = dict(
        Membership.objects.filter(user=user, organization__in=orgs).values_list(
            "organization_id", "role"
        )
    )
    for org in orgs:
        org.user_role = roles.get(org.pk)
    return orgs


def org_overview(*, user, org_id: int) -> Organization:
    org = get_org_for_member(user=user, org_id=org_id)
    org = Organization.objects.filter(pk=org.pk).prefetch_related(sites_with_apps()).get()
    org.user_role = role_in(user=user, org=org)
    return org
