"""The data plane follows the kill switch (connected in ``AppConfig.ready()``)."""

from django.db import transaction

from connections.models import DataKey, ScopeKind
from connections.signals import key_access_revoked, scope_access_revoked
from dataplane import dek_cache


def purge_data_keys_on_revocation(sender, *, connection, **kwargs) -> None:
    """This process drops the org's plaintext data keys at once and again after the commit;
    every other process refuses within ``DEK_GUARD_TTL_S`` (the access guard re-reads state)."""
    org_id = connection.organization_id
    dek_cache.purge_org(org_id)
    transaction.on_commit(lambda: dek_cache.purge_org(org_id))


def purge_scope_on_revocation(sender, *, connection, revocation, **kwargs) -> None:
    """A scope was revoked: this process drops that scope's keys and guard answers after the
    commit; every other process refuses within ``DEK_GUARD_TTL_S`` (its guard's query)."""
    if revocation.kind == ScopeKind.PERIOD:
        dek_ids = list(revocation.data_keys.values_list("pk", flat=True))
        app_ids = set(
            DataKey.objects.filter(pk__in=dek_ids).values_list("app_instance_id", flat=True)
        )
    elif revocation.kind == ScopeKind.SITE:
        dek_ids, app_ids = [], set(revocation.site.app_instances.values_list("pk", flat=True))
    else:
        dek_ids, app_ids = [], {revocation.app_instance_id}

    def purge() -> None:
        dek_cache.CACHE.discard_many(dek_ids)
        for app_id in app_ids:
            if revocation.kind == ScopeKind.PERIOD:
                dek_cache.GUARD.forget_app(app_id)  # the next use re-reads the revoked keys
            else:
                dek_cache.purge_app(app_id)

    transaction.on_commit(purge)


def connect() -> None:
    key_access_revoked.connect(purge_data_keys_on_revocation, dispatch_uid="dataplane-purge")
    scope_access_revoked.connect(purge_scope_on_revocation, dispatch_uid="dataplane-scope-purge")
