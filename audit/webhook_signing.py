"""The SIEM webhook's shared secret: kept encrypted at rest, and signing the Standard Webhooks way.

Signature (https://www.standardwebhooks.com, made with the ``standardwebhooks`` package):

* ``webhook-id``: the delivery's id, the same on every retry (receivers dedupe on it);
* ``webhook-timestamp``: Unix seconds when this attempt was signed;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``.

The key is what the admin entered, read the way the Standard Webhooks libraries read a
secret: ``whsec_<base64>`` is the base64-decoded bytes; any other secret (a passphrase, as
the secrets saved before this format are) is its UTF-8 bytes as typed. A receiver verifies with
an off-the-shelf library given :func:`library_secret` of what the admin entered — the secret
itself when it is ``whsec_…``, else ``"whsec_" + base64(secret)`` (in Python,
``Webhook(secret.encode())`` takes the raw bytes directly). docs/siem-webhooks.md shows both.

At rest the secret is a Fernet token (a key derived from ``SECRET_KEY`` by HKDF unless
``AUDIT_WEBHOOK_ENCRYPTION_KEYS`` is set); it is never shown again after saving.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 — the format's prefix, not a secret  # nosec B105
#: A ``whsec_`` secret entered in the form decodes to this many random bytes (as Svix's do).
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


# --- At rest --------------------------------------------------------------------------------------


def _derived_fernet_key(secret: str) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"byok-portal",
        info=b"audit webhook shared secrets v1",
    )
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode()))


def _fernet() -> MultiFernet:
    keys = list(settings.AUDIT_WEBHOOK_ENCRYPTION_KEYS)
    if not keys:
        keys = [
            _derived_fernet_key(k)
            for k in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
        ]
    return MultiFernet([Fernet(k) for k in keys])


def encrypt_secret(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def decrypt_secret(token: str) -> bytes:
    return _fernet().decrypt(token.encode())


# --- The signing key ------------------------------------------------------------------------------


def whsec_key(secret: str) -> bytes | None:
    """The key bytes of a ``whsec_<base64>`` secret; ``None`` when ``secret`` is not one."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Padding optional, as the libraries accept it; any other stray character: not base64.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def signing_key(secret: bytes) -> bytes:
    """The HMAC key of a stored secret (see the module docstring for the rule)."""
    try:
        text = secret.decode("utf-8")
    except UnicodeDecodeError:
        return secret
    return whsec_key(text) or secret


def library_secret(secret: str) -> str:
    """What to give a Standard Webhooks library to verify deliveries signed with ``secret``."""
    if whsec_key(secret) is not None:
        return secret
    return SECRET_PREFIX + base64.b64encode(secret.encode()).decode()


def signed_headers(*, secret: bytes, message_id: str, timestamp: int, body: bytes) -> dict:
    """The three Standard Webhooks headers of one attempt."""
    signature = Webhook(signing_key(secret)).sign(
        msg_id=message_id, timestamp=datetime.fromtimestamp(timestamp, tz=UTC), data=body.decode()
    )
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature,
    }
