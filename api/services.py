"""Token changes and the kill switch's API front: each a transaction with its audit event.

Business actions stay in their apps: the kill switch is ``connections.services.
revoke_key_access`` and, for one site, app or period, ``revoke_scope`` (the page's services,
so the same audit events and notices); this module adds what belongs to the API itself: the
token's own audit trail and idempotency.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from api.models import SCOPE_KEYS_REVOKE, SCOPES, ApiToken, IdempotencyRecord
from api.tokens import new_token
from audit.services import record_event
from connections.lifecycle import TransitionNotAllowed
from connections.services import InvalidScope, Scope, revoke_key_access, revoke_scope
from core.errors import NotAllowed, NotFound
from orgs.models import Membership

#: At most once a minute per token: the last-used time and address are bookkeeping, not a log.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenRefused(NotAllowed):
    """The token cannot be created or changed as asked."""


def token_identity(token: ApiToken) -> dict:
    """The CloudTrail ``userIdentity`` of a call made with ``token``."""
    return {
        "type": "PortalApiToken",
        "principalId": f"api-token:{token.prefix}",
        "accessKeyId": token.display_id,
        "userName": token.created_by.email,
    }


def _describe(token: ApiToken) -> dict:
    return {
        "tokenId": token.display_id,
        "name": token.name,
        "scopes": list(token.scopes),
        "expiresAt": token.expires_at.isoformat(),
    }


@transaction.atomic
def create_api_token(
    *, org, actor, name: str, scopes: list[str], expires_at, source_ip: str = ""
) -> tuple[ApiToken, str]:
    """A new token of ``org``; returns it and the whole token (shown once, never stored)."""
    if actor.is_staff or actor.is_superuser or actor.has_any_permission():
        raise TokenRefused("Vendor staff cannot create organization API tokens.")
    if not Membership.objects.filter(
        user=actor, organization=org, role=Membership.Role.ADMIN
    ).exists():
        raise TokenRefused("Only organization admins can create API tokens.")
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise TokenRefused("Choose at least one known scope.")
    now = timezone.now()
    if not now < expires_at <= now + timedelta(days=settings.API_TOKEN_MAX_LIFETIME_DAYS):
        raise TokenRefused(
            f"A token expires in the future and within {settings.API_TOKEN_MAX_LIFETIME_DAYS} days."
        )
    whole, prefix, secret_hash = new_token()
    token = ApiToken.objects.create(
        organization=org,
        created_by=actor,
        name=name,
        prefix=prefix,
        secret_hash=secret_hash,
        scopes=[s for s in SCOPES if s in scopes],
        expires_at=expires_at,
    )
    record_event(
        org=org,
        actor=actor,
        event_name="CreateApiToken",
        source_ip=source_ip,
        request_parameters=_describe(token),
    )
    return token, whole


@transaction.atomic
def revoke_api_token(*, org, token_id: int, actor, source_ip: str = "") -> ApiToken:
    token = (
        ApiToken.objects.select_for_update(of=("self",), no_key=True)
        .filter(organization=org, pk=token_id)
        .first()
    )
    if token is None:
        raise NotFound("No such API token.")
    if token.revoked_at is not None:
        raise TokenRefused("That token is already revoked.")
    token.revoked_at = timezone.now()
    token.revoked_by = actor
    token.save(update_fields=["revoked_at", "revoked_by"])
    record_event(
        org=org,
        actor=actor,
        event_name="RevokeApiToken",
        source_ip=source_ip,
        request_parameters=_describe(token),
    )
    return token


def record_refused_kill_switch(
    *, token: ApiToken, source_ip: str, operation: str = "RevokeKeyAccess"
) -> None:
    """A token without ``keys:revoke`` tried the kill switch: the security team hears of it."""
    record_event(
        org=token.organization,
        event_name="UseApiToken",
        user_identity=token_identity(token),
        source_ip=source_ip,
        request_parameters={"scope": SCOPE_KEYS_REVOKE, "operation": operation},
        response_elements={"status": 403},
        error_code="AccessDenied",
        error_message=f"The token does not have the {SCOPE_KEYS_REVOKE!r} scope.",
    )


def note_token_use(*, token: ApiToken, ip: str) -> None:
    """Last-used time and address, written at most once a minute per token (one UPDATE)."""
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiToken.objects.filter(pk=token.pk).exclude(
        last_used_at__gt=now - LAST_USED_RESOLUTION
    ).update(last_used_at=now, last_used_ip=ip or None)


@dataclass(frozen=True)
class ApiAnswer:
    """A status and a JSON body, as stored for an idempotent replay."""

    status: int
    body: dict
    replayed: bool = False


class IdempotencyConflict(Exception):
    """The ``Idempotency-Key`` was used before with a different request."""


def request_fingerprint(*, method: str, path: str, body: dict) -> str:
    canonical = json.dumps(
        {"method": method, "path": path, "body": body}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(token: ApiToken, key: str, fingerprint: str) -> ApiAnswer | None:
    record = IdempotencyRecord.objects.filter(token=token, key=key).first()
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise IdempotencyConflict("This Idempotency-Key was already used with a different request.")
    return ApiAnswer(record.status_code, record.response_body, replayed=True)


def revoke_key_access_with_token(
    *,
    token: ApiToken,
    reason: str,
    source_ip: str,
    idempotency_key: str = "",
    fingerprint: str = "",
    describe,
    scope: Scope | None = None,
    success_status: int = 200,
) -> ApiAnswer:
    """The kill switch pulled with ``token`` (scope ``keys:revoke``, checked by the caller):
    the whole organization, or only ``scope`` (one site, app instance or period of data).
    ``describe`` turns the result (the connection, or the scoped revocation) into the body.

    With an ``idempotency_key``, the first answer is stored with the token and the key, and
    the same key with the same request replays it; with another request it is refused.
    """
    if idempotency_key:
        replay = _replay(token, idempotency_key, fingerprint)
        if replay is not None:
            return replay
    try:
        return _revoke_and_store(
            token=token,
            reason=reason,
            source_ip=source_ip,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            describe=describe,
            scope=scope,
            success_status=success_status,
        )
    except IntegrityError:
        # A concurrent request with the same key committed first: answer what it answered.
        replay = _replay(token, idempotency_key, fingerprint)
        if replay is None:
            raise
        return replay


def _problem(status: int, slug: str, title: str, detail: str) -> ApiAnswer:
    return ApiAnswer(
        status,
        {
            "type": f"https://byok.vendor.example/problems/{slug}",
            "title": title,
            "status": status,
            "detail": detail,
        },
    )


def _scope_parameters(scope: Scope | None) -> dict | None:
    if scope is None:
        return None
    described = {
        "kind": scope.kind,
        "siteId": scope.site_id,
        "appInstanceId": scope.app_instance_id,
    }
    for name, moment in (("from", scope.period_from), ("to", scope.period_to)):
        described[name] = moment.isoformat() if moment else None
    return {key: value for key, value in described.items() if value is not None}


@transaction.atomic
def _revoke_and_store(
    *, token, reason, source_ip, idempotency_key, fingerprint, describe, scope, success_status
) -> ApiAnswer:
    org, actor = token.organization, token.created_by
    if idempotency_key:
        # Claims the key first: a concurrent twin blocks here until this one commits.
        record = IdempotencyRecord.objects.create(
            token=token,
            key=idempotency_key,
            request_hash=fingerprint,
            status_code=0,
            response_body={},
        )
    error = error_code = ""
    stated = f"{reason} (API token {token.display_id})"
    try:
        if scope is None:
            result = revoke_key_access(org=org, actor=actor, reason=stated, source_ip=source_ip)
        else:  # each service runs in its own savepoint: a refusal leaves nothing behind
            result = revoke_scope(
                org=org, actor=actor, scope=scope, reason=stated, source_ip=source_ip
            )
    except InvalidScope as exc:  # the request names something that cannot be revoked
        error, error_code = str(exc), "InvalidScope"
        answer = _problem(400, "invalid-scope", "Invalid scope", error)
    except TransitionNotAllowed as exc:
        error, error_code = str(exc), "NotAllowed"
        answer = _problem(409, "not-allowed", "Not allowed in this state", error)
    except NotFound as exc:  # a site or app id that is not this organization's
        error, error_code = str(exc), "NotFound"
        answer = _problem(404, "not-found", "Not found", error)
    else:
        answer = ApiAnswer(success_status, describe(result))
    record_event(
        org=org,
        event_name="UseApiToken",
        user_identity=token_identity(token),
        source_ip=source_ip,
        request_parameters={
            "scope": SCOPE_KEYS_REVOKE,
            "operation": "RevokeKeyAccess" if scope is None else "RevokeScopedKeyAccess",
            "revocationScope": _scope_parameters(scope),
            "reason": reason,
            "idempotencyKey": idempotency_key or None,
        },
        response_elements={"status": answer.status},
        error_code=error_code,
        error_message=error,
    )
    if idempotency_key:
        record.status_code, record.response_body = answer.status, answer.body
        record.save(update_fields=["status_code", "response_body"])
    return answer
