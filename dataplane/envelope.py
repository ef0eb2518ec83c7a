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
is not kept by this module after the cipher is built. :meth:`DataKeyCipher.record_functions`
binds a cipher to one owner (org and app instance) once, so the data plane's hot path packs
only the record id and makes one Python call per seal or open.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Sequence

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
_BAD_PART = "AAD parts must be integers between 0 and 2**64 - 1."


class DecryptionFailed(Exception):
    """A ciphertext could not be opened: tampered, moved, truncated or under another key."""


def record_aad_parts(*, org_id: int, app_instance_id: int, record_id: int) -> tuple[int, int, int]:
    """The AAD parts that bind a record's ciphertext to its org, app instance and record."""
    return (org_id, app_instance_id, record_id)


_AAD3 = _PART_STRUCTS[3]
_pack_id = _PART_STRUCTS[1].pack
_urandom = os.urandom
# Below this size a ciphertext is sliced (a small copy); above it, viewed (no copy).
_VIEW_FROM_BYTES = 4096
_BODY = HEADER_BYTES + NONCE_BYTES
# From this size to the max, a record is sealed into a per-thread scratch buffer and copied
# once into the result (below it, encrypting into a fresh object and joining is faster).
_SCRATCH_FROM_BYTES = 16 * 1024
_SCRATCH_MAX_BYTES = 1 << 20


class _Scratch(threading.local):
    """One reusable output buffer per thread (ciphertext only: never plaintext or keys)."""

    def __init__(self):
        self.view = memoryview(bytearray(_SCRATCH_FROM_BYTES + TAG_BYTES))


_scratch = _Scratch()


def _seal_large(encrypt, encrypt_into, header: bytes, nonce: bytes, plaintext, aad: bytes):
    """``header || nonce || AES-GCM(plaintext)`` with one large allocation instead of two."""
    if type(plaintext) is not bytes or len(plaintext) > _SCRATCH_MAX_BYTES:
        return header + nonce + encrypt(nonce, plaintext, aad)
    size = len(plaintext) + TAG_BYTES
    view = _scratch.view
    if len(view) < size:
        view = _scratch.view = memoryview(bytearray(size))
    out = view[:size]
    encrypt_into(nonce, plaintext, aad, out)
    return header + nonce + out


def _aad(prefix: bytes, parts: Sequence[int]) -> bytes:
    """``prefix`` (label || header) followed by the parts as unsigned 64-bit integers."""
    try:
        if len(parts) == 3:  # the record case, without a dictionary lookup
            return prefix + _AAD3.pack(*parts)
        packer = _PART_STRUCTS.get(len(parts))
        return prefix + (packer.pack(*parts) if packer else struct.pack(f">{len(parts)}Q", *parts))
    except struct.error:
        raise ValueError(_BAD_PART) from None


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

    @property
    def header(self) -> bytes:
        """The 9 header bytes (version, data key id) that begin every ciphertext of this key."""
        return self._header

    def record_functions(
        self, *, org_id: int, app_instance_id: int
    ) -> tuple[Callable[[int, bytes], bytes], Callable[[bytes, int], bytes]]:
        """``(seal_record, open_record)`` for the records of one app instance of one org.

        ``seal_record(record_id, plaintext)`` is ``seal(plaintext, (org_id, app_instance_id,
        record_id))`` and ``open_record(blob, record_id)`` is ``open(blob, (org_id,
        app_instance_id, record_id))`` — same bytes, same errors — with the AAD's fixed part
        (label, header, org and app ids) packed once here instead of on every call.
        """
        header = self._header
        fixed = self._aad_prefix + _PART_STRUCTS[2].pack(org_id, app_instance_id)
        aead = self._aead
        encrypt, encrypt_into, decrypt = aead.encrypt, aead.encrypt_into, aead.decrypt
        urandom, pack_id = _urandom, _pack_id
        generic_open = self.open

        def seal_record(record_id: int, plaintext: bytes) -> bytes:
            try:
                aad = fixed + pack_id(record_id)
            except struct.error:
                raise ValueError(_BAD_PART) from None
            nonce = urandom(NONCE_BYTES)
            try:
                large = len(plaintext) >= _SCRATCH_FROM_BYTES
            except TypeError:  # a buffer without a length: the general way below
                large = False
            if large:
                return _seal_large(encrypt, encrypt_into, header, nonce, plaintext, aad)
            return header + nonce + encrypt(nonce, plaintext, aad)

        def open_record(blob: bytes, record_id: int) -> bytes:
            size = len(blob)
            # ``fixed`` holds this key's header: it is used only for a ciphertext that carries
            # exactly that header. Anything else (another key id or version, too short, or a
            # failed tag) is judged by open(), which rebuilds the AAD from the blob's header.
            if size >= OVERHEAD_BYTES and blob[:HEADER_BYTES] == header:
                try:
                    aad = fixed + pack_id(record_id)
                except struct.error:
                    raise ValueError(_BAD_PART) from None
                try:
                    if size < _VIEW_FROM_BYTES:
                        return decrypt(blob[HEADER_BYTES:_BODY], blob[_BODY:], aad)
                    return decrypt(blob[HEADER_BYTES:_BODY], memoryview(blob)[_BODY:], aad)
                except InvalidTag:
                    pass
            return generic_open(blob, (org_id, app_instance_id, record_id))

        return seal_record, open_record

    # seal/open: the general form (any number of AAD parts), and the reference that
    # record_functions() matches byte for byte and error for error.

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
