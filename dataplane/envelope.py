"""AES-256-GCM envelope encryption of app records: the only module that touches key bytes.

Ciphertext format, version 1 (all integers big-endian)::

    +---------+-------------+-----------+---------------------------+
    | version | data key id |   nonce   | AES-GCM ciphertext + tag  |
    | 1 byte  |   8 bytes   | 12 bytes  | len(plaintext) + 16 bytes |
    +---------+-------------+-----------+---------------------------+

The first 9 bytes (version and data key id) are the *header*: everything needed to find the
key. The nonce is random per message (96 bits from the OS CSPRNG). The associated data (AAD)
authenticated with each message is::

    b"byok-portal/app-record" || header || uint64(part) for each part

with parts ``(org id, app instance id, record id)`` (see :func:`record_aad_parts`). A
ciphertext copied to another record, app instance or organization, or re-labelled with
another data key id, therefore fails authentication, as does any changed byte.

Every failure to open a ciphertext — truncated, unknown version, wrong key, changed byte,
wrong AAD — raises the one exception :class:`DecryptionFailed`, whose message never contains
plaintext, key bytes or ciphertext.

Speed: :class:`DataKeyCipher` wraps one ``AESGCM`` object per data key, so the key schedule
is computed once; the DEK cache holds these objects rather than raw bytes, and the raw key
is not kept by this module after the cipher is built.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = 1
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(">BQ")  # version, data key id
HEADER_BYTES = _HEADER.size  # 9
OVERHEAD_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES  # 37
_AAD_LABEL = b"byok-portal/app-record"
_MAX_ID = 2**64 - 1
_PART_STRUCTS = {n: struct.Struct(f">{n}Q") for n in range(1, 6)}


class DecryptionFailed(Exception):
    """A ciphertext could not be opened: tampered, moved, truncated or under another key."""


def record_aad_parts(*, org_id: int, app_instance_id: int, record_id: int) -> tuple[int, int, int]:
    """The AAD parts that bind a record's ciphertext to its org, app instance and record."""
    return (org_id, app_instance_id, record_id)


_AAD3 = _PART_STRUCTS[3]
_urandom = os.urandom
# Below this size a ciphertext is sliced (a small copy); above it, viewed (no copy).
_VIEW_FROM_BYTES = 4096
_BODY = HEADER_BYTES + NONCE_BYTES


def _aad(prefix: bytes, parts: Sequence[int]) -> bytes:
    """``prefix`` (label || header) followed by the parts as unsigned 64-bit integers."""
    try:
        if len(parts) == 3:  # the record case, without a dictionary lookup
            return prefix + _AAD3.pack(*parts)
        packer = _PART_STRUCTS.get(len(parts))
        return prefix + (packer.pack(*parts) if packer else struct.pack(f">{len(parts)}Q", *parts))
    except struct.error:
        raise ValueError("AAD parts must be integers between 0 and 2**64 - 1.") from None


def parse_header(blob: bytes) -> tuple[int, int]:
    """``(format version, data key id)`` of a ciphertext, without decrypting it."""
    if len(blob) < OVERHEAD_BYTES:
        raise DecryptionFailed("The ciphertext is too short to be an encrypted record.")
    version, dek_id = _HEADER.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise DecryptionFailed(f"Unsupported ciphertext format version {version}.")
    return version, dek_id


def key_id_of(blob: bytes) -> int:
    """The data key id in a ciphertext's header (the version is checked on opening)."""
    try:
        return _HEADER.unpack_from(blob)[1]
    except struct.error:
        raise DecryptionFailed("The ciphertext is too short to be an encrypted record.") from None


class DataKeyCipher:
    """AES-256-GCM under one data key. Holds the ``AESGCM`` object, never exposes the key."""

    __slots__ = ("dek_id", "_aead", "_header", "_aad_prefix")

    def __init__(self, *, dek_id: int, dek: bytes):
        if not 0 <= dek_id <= _MAX_ID:
            raise ValueError("The data key id must fit in 8 bytes.")
        if len(dek) != KEY_BYTES:
            raise ValueError("A data key must be 32 bytes (AES-256).")
        self.dek_id = dek_id
        self._aead = AESGCM(bytes(dek))
        self._header = _HEADER.pack(FORMAT_VERSION, dek_id)
        self._aad_prefix = _AAD_LABEL + self._header

    def __repr__(self) -> str:  # never the key
        return f"<DataKeyCipher dek_id={self.dek_id}>"

    # seal/open are the data plane's hot path: the record case (three AAD parts) is inlined.

    def seal(self, plaintext: bytes, aad_parts: Sequence[int]) -> bytes:
        """Encrypt ``plaintext``; the result carries header and nonce (see module docstring)."""
        nonce = _urandom(NONCE_BYTES)
        try:
            aad = self._aad_prefix + _AAD3.pack(*aad_parts)
        except struct.error:
            aad = _aad(self._aad_prefix, aad_parts)  # other part counts, or a ValueError
        return self._header + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad_parts: Sequence[int]) -> bytes:
        """Decrypt a ciphertext made by :meth:`seal` with the same AAD parts.

        The AAD is rebuilt from the ciphertext's *own* header, so a changed version or key id
        fails authentication like any other changed byte; only then is the header examined,
        for a precise message.
        """
        size = len(blob)
        if size < OVERHEAD_BYTES:
            raise DecryptionFailed("The ciphertext is too short to be an encrypted record.")
        try:
            aad = _AAD_LABEL + blob[:HEADER_BYTES] + _AAD3.pack(*aad_parts)
        except struct.error:
            aad = _aad(_AAD_LABEL + blob[:HEADER_BYTES], aad_parts)
        try:
            return self._aead.decrypt(
                blob[HEADER_BYTES:_BODY],
                blob[_BODY:] if size < _VIEW_FROM_BYTES else memoryview(blob)[_BODY:],
                aad,
            )
        except InvalidTag:
            pass
        _version, dek_id = parse_header(blob)  # raises for an unknown format version
        if dek_id != self.dek_id:
            raise DecryptionFailed(f"The ciphertext names data key #{dek_id}, not #{self.dek_id}.")
        raise DecryptionFailed(
            "The ciphertext failed authentication: it was changed, or it belongs to "
            "another record, app or organization."
        )


def seal(*, dek: bytes, dek_id: int, plaintext: bytes, aad_parts: Sequence[int]) -> bytes:
    """One-off :meth:`DataKeyCipher.seal` (hot paths keep a cipher per data key instead)."""
    return DataKeyCipher(dek_id=dek_id, dek=dek).seal(plaintext, aad_parts)


def open_(*, dek: bytes, blob: bytes, aad_parts: Sequence[int]) -> bytes:
    """One-off :meth:`DataKeyCipher.open`; the data key id is read from the header."""
    _version, dek_id = parse_header(blob)
    return DataKeyCipher(dek_id=dek_id, dek=dek).open(blob, aad_parts)
