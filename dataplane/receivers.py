"""The data plane follows the kill switch (connected in ``AppConfig.ready()``)."""

from django.db import transaction

from connections.signals import key_access_revoked
from dataplane import dek_cache


def purge_data_keys_on_revocation(sender, *, connection, **kwargs) -> None:
    """This process drops the org's plaintext data keys at once and again after the commit;
    every other process refuses within ``DEK_GUARD_TTL_S`` (the access guard re-reads state)."""
    org_id = connection.organization_id
    dek_cache.purge_org(org_id)
    transaction.on_commit(lambda: dek_cache.purge_org(org_id))


def connect() -> None:
    key_access_revoked.connect(purge_data_keys_on_revocation, dispatch_uid="dataplane-purge")
