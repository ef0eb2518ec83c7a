"""The token format: ``byok_<prefix>_<secret>``, generated, parsed and hashed here only."""

import hashlib
import hmac
import re
import secrets

TOKEN_RE = re.compile(r"^byok_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def new_token() -> tuple[str, str, str]:
    """A fresh token: (the whole token, shown once; its prefix; its secret's hash)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 256 bits, 43 characters
    return f"byok_{prefix}_{secret}", prefix, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(value: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed token, else ``None``."""
    match = TOKEN_RE.match(value or "")
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
