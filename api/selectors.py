"""Tenant-scoped reads of API tokens (read-only: no row written)."""

from django.db.models import Exists, OuterRef, QuerySet
from django.http import Http404

from api.models import ApiToken
from orgs.models import Membership


def tokens_of(org) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(organization=org).select_related("created_by", "revoked_by")


def get_token_of(*, org, token_id: int) -> ApiToken:
    token = tokens_of(org).filter(pk=token_id).first()
    if token is None:
        raise Http404("No such API token.")
    return token


def token_by_prefix(prefix: str) -> ApiToken | None:
    """The token with ``prefix``, its organization and creator, and whether the creator is
    still an admin of the organization (``creator_is_admin``), in one query."""
    still_admin = Membership.objects.filter(
        user_id=OuterRef("created_by_id"),
        organization_id=OuterRef("organization_id"),
        role=Membership.Role.ADMIN,
    )
    return (
        ApiToken.objects.filter(prefix=prefix)
        .select_related("organization", "created_by")
        .annotate(creator_is_admin=Exists(still_admin))
        .first()
    )
