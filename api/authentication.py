"""``Authorization: Bearer byok_…``: the org API token, or 401.

A token works while it is not revoked, not expired, and its creator is still an admin of its
organization and not vendor staff; it then acts as that admin (``request.user``) for its own
organization only (``request.auth`` is the token).
"""

from django.utils import timezone
from rest_framework import authentication, exceptions

from api import selectors, services
from api.tokens import parse_token, secret_matches
from audit.request_context import client_ip

INVALID = "The API token is not valid: it is unknown, expired, revoked or no longer authorized."


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send one token: Authorization: Bearer <token>.")
        try:
            parsed = parse_token(header[1].decode("ascii"))
        except UnicodeDecodeError:
            parsed = None
        if parsed is None:
            raise exceptions.AuthenticationFailed(INVALID)
        prefix, secret = parsed
        token = selectors.token_by_prefix(prefix)
        if token is None or not secret_matches(secret, token.secret_hash):
            raise exceptions.AuthenticationFailed(INVALID)
        user = token.created_by
        if (
            token.revoked_at is not None
            or token.expires_at <= timezone.now()
            or not token.creator_is_admin
            or not user.is_active
            or user.is_staff
            or user.is_superuser
            or user.has_any_permission()
        ):
            raise exceptions.AuthenticationFailed(INVALID)
        services.note_token_use(token=token, ip=client_ip(request._request))
        return user, token

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'
