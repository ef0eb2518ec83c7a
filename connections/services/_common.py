"""Shared by the lifecycle services: the row lock, the BYOK apps switch, the keys in use."""

import logging

from django.utils import timezone

from connections import aws
from connections.models import (
    ByokConnection,
    ConnectionState,
    RegionalKey,
)
from orgs.models import AppInstance

log = logging.getLogger(__name__)
S = ConnectionState
SYSTEM_IDENTITY = {"type": "AWSService", "invokedBy": "byok-portal-monitor"}

# DescribeKey states that mean the customer took the key away.
REVOKED_KEY_STATES = {
    "Disabled": RegionalKey.Status.DISABLED,
    "PendingDeletion": RegionalKey.Status.PENDING_DELETION,
    "PendingReplicaDeletion": RegionalKey.Status.PENDING_DELETION,
    "Unavailable": RegionalKey.Status.DISABLED,
}
KEY_GONE_STATUSES = (
    RegionalKey.Status.DISABLED,
    RegionalKey.Status.PENDING_DELETION,
    RegionalKey.Status.NOT_FOUND,
)
CAUSE_TO_KEY_STATUS = {
    aws.KeyDisabled.cause: RegionalKey.Status.DISABLED,
    aws.KeyInvalidState.cause: RegionalKey.Status.PENDING_DELETION,
    aws.KeyNotFound.cause: RegionalKey.Status.NOT_FOUND,
    aws.AccessDenied.cause: RegionalKey.Status.ACCESS_DENIED,
    aws.RoleUnavailable.cause: RegionalKey.Status.ACCESS_DENIED,
}


def _forget_sessions(org_id: int) -> None:
    """This process drops its cached AWS sessions at once (the data plane's receiver purges its
    data keys; every other process notices within DEK_GUARD_TTL_S)."""
    aws.forget_sessions()


def _set_byok_apps(connection: ByokConnection, status: str, reason: str) -> list[int]:
    apps = AppInstance.objects.select_for_update(no_key=True).filter(
        site__organization_id=connection.organization_id, encryption=AppInstance.Encryption.BYOK
    )
    ids = list(apps.values_list("pk", flat=True))
    AppInstance.objects.filter(pk__in=ids).update(
        status=status, status_reason=reason[:300], updated_at=timezone.now()
    )
    return ids


def _lock(org_id: int) -> ByokConnection:
    return (
        ByokConnection.objects.select_for_update(of=("self",), no_key=True)
        .select_related("organization")
        .get(organization_id=org_id)
    )


def _current_keys(connection):
    return list(RegionalKey.objects.filter(connection=connection, is_current=True))


def _keys_in_use(connection):
    """Current keys, and during a re-encryption the previous ones still holding data keys.
    Ordered so that a region's current key comes last."""
    return list(
        RegionalKey.objects.filter(connection=connection, retired_at=None).order_by(
            "is_current", "region", "generation"
        )
    )
