"""Helpers of the API tests: tokens and authenticated calls."""

from datetime import timedelta

from django.utils import timezone

from api import services
from api.models import SCOPES


def make_token(org, user, scopes=SCOPES, *, days: int = 30, name: str = "playbook") -> str:
    """A fresh token of ``org`` created by ``user`` (an org admin); returns the whole token."""
    _token, whole = services.create_api_token(
        org=org,
        actor=user,
        name=name,
        scopes=list(scopes),
        expires_at=timezone.now() + timedelta(days=days),
    )
    return whole


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
