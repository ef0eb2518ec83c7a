"""What the connection lifecycle tells the apps built on it.

The lifecycle knows nothing of the data plane or re-encryption; they listen here (receivers
connected in their ``AppConfig.ready()``). Each signal is sent inside the transaction that
changes the state, with the locked connection, so a receiver's writes commit or roll back
with it; work that must wait for the commit uses ``transaction.on_commit``.
"""

from django.dispatch import Signal

#: Key access was revoked (by an admin, the monitor or an AWS refusal). ``connection``.
key_access_revoked = Signal()
#: A restore was verified; the connection is active again. ``connection``.
key_access_restored = Signal()
#: The restore window ended; the data keys are about to be destroyed. ``connection``.
key_access_expired = Signal()

#: One site, app instance or period of data was revoked. ``connection``, ``revocation``.
scope_access_revoked = Signal()
#: A scoped revocation's restore was verified; the scope is back. ``connection``, ``revocation``.
scope_access_restored = Signal()
