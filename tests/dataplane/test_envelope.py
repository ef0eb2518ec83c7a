"""dataplane.envelope: the AES-256-GCM record format. Pure: no database, no AWS."""

import os
import threading

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane import envelope
from dataplane.envelope import DataKeyCipher, DecryptionFailed

DEK = bytes(range(32))
OTHER_DEK = bytes(range(1, 33))
PARTS = envelope.record_aad_parts(org_id=7, app_instance_id=11, record_id=42)
SECRET = b"Issue PROJ-1: the launch date is 3 June"


@pytest.fixture
def cipher() -> DataKeyCipher:
    return DataKeyCipher(dek_id=5, dek=DEK)


def test_sealed_record_opens_to_its_plaintext(cipher):
    blob = cipher.seal(SECRET, PARTS)

    assert cipher.open(blob, PARTS) == SECRET


def test_ciphertext_layout_is_version_key_id_nonce_then_ciphertext_and_tag(cipher):
    blob = cipher.seal(SECRET, PARTS)

    assert len(blob) == len(SECRET) + envelope.OVERHEAD_BYTES
    assert blob[0] == envelope.FORMAT_VERSION == 1
    assert int.from_bytes(blob[1:9], "big") == 5
    assert envelope.parse_header(blob) == (1, 5)
    assert SECRET not in blob


def test_ciphertext_is_standard_aes_256_gcm_with_the_documented_aad(cipher):
    blob = cipher.seal(SECRET, PARTS)
    header, nonce, body = blob[:9], blob[9:21], blob[21:]
    aad = b"byok-portal/app-record" + header + b"".join(p.to_bytes(8, "big") for p in PARTS)

    assert AESGCM(DEK).decrypt(nonce, body, aad) == SECRET


def test_each_seal_uses_a_fresh_nonce(cipher):
    nonces = {cipher.seal(SECRET, PARTS)[9:21] for _ in range(200)}

    assert len(nonces) == 200


@pytest.mark.parametrize(
    "position",
    [0, 1, 8, 9, 20, 21, 30, -16, -1],
    ids=[
        "version",
        "keyid-first",
        "keyid-last",
        "nonce-first",
        "nonce-last",
        "body-first",
        "body-middle",
        "tag-first",
        "tag-last",
    ],
)
def test_changing_any_byte_fails_to_decrypt(cipher, position):
    blob = bytearray(cipher.seal(SECRET, PARTS))
    blob[position] ^= 0x01

    with pytest.raises(DecryptionFailed):
        cipher.open(bytes(blob), PARTS)


@pytest.mark.parametrize(
    "moved_to",
    [
        envelope.record_aad_parts(org_id=7, app_instance_id=11, record_id=43),
        envelope.record_aad_parts(org_id=7, app_instance_id=12, record_id=42),
        envelope.record_aad_parts(org_id=8, app_instance_id=11, record_id=42),
    ],
    ids=["other-record", "other-app", "other-org"],
)
def test_ciphertext_moved_to_another_record_app_or_org_fails(cipher, moved_to):
    blob = cipher.seal(SECRET, PARTS)

    with pytest.raises(DecryptionFailed):
        cipher.open(blob, moved_to)


def test_another_data_key_cannot_open_the_record(cipher):
    blob = cipher.seal(SECRET, PARTS)
    impostor = DataKeyCipher(dek_id=5, dek=OTHER_DEK)

    with pytest.raises(DecryptionFailed):
        impostor.open(blob, PARTS)


def test_ciphertext_relabelled_with_another_key_id_fails(cipher):
    blob = cipher.seal(SECRET, PARTS)
    relabelled = blob[:1] + (6).to_bytes(8, "big") + blob[9:]

    with pytest.raises(DecryptionFailed, match="data key #6"):
        cipher.open(relabelled, PARTS)
    # Even a cipher for key #6 holding the same bytes fails: the key id is authenticated.
    with pytest.raises(DecryptionFailed):
        DataKeyCipher(dek_id=6, dek=DEK).open(relabelled, PARTS)


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x01" + bytes(35)], ids=["empty", "1", "36"])
def test_truncated_ciphertext_fails(cipher, blob):
    with pytest.raises(DecryptionFailed, match="too short"):
        cipher.open(blob, PARTS)
    with pytest.raises(DecryptionFailed):
        envelope.parse_header(blob)


def test_unknown_format_version_fails(cipher):
    blob = b"\x02" + cipher.seal(SECRET, PARTS)[1:]

    with pytest.raises(DecryptionFailed, match="version 2"):
        envelope.parse_header(blob)
    with pytest.raises(DecryptionFailed, match="version 2"):
        cipher.open(blob, PARTS)


def test_failures_never_echo_plaintext_or_key(cipher):
    blob = bytearray(cipher.seal(SECRET, PARTS))
    blob[-1] ^= 1
    with pytest.raises(DecryptionFailed) as failure:
        cipher.open(bytes(blob), PARTS)

    text = str(failure.value) + repr(failure.value)
    assert SECRET.decode() not in text
    assert DEK.hex() not in text
    assert failure.value.__cause__ is None
    assert failure.value.__context__ is None or failure.value.__suppress_context__


def test_cipher_repr_shows_the_key_id_not_the_key(cipher):
    assert repr(cipher) == "<DataKeyCipher dek_id=5>"
    assert not hasattr(cipher, "__dict__")  # nowhere to stash the raw key by accident


def test_ciphertext_opens_from_a_memoryview(cipher):
    # PostgreSQL's BinaryField yields memoryview objects.
    blob = cipher.seal(SECRET, PARTS)

    assert cipher.open(memoryview(blob), PARTS) == SECRET


def test_empty_and_large_plaintexts_round_trip(cipher):
    for plaintext in (b"", os.urandom(1 << 20)):
        assert cipher.open(cipher.seal(plaintext, PARTS), PARTS) == plaintext


@pytest.mark.parametrize(
    "bad_key", [b"", bytes(16), bytes(31), bytes(33)], ids=["0", "16", "31", "33"]
)
def test_only_256_bit_keys_are_accepted(bad_key):
    with pytest.raises(ValueError, match="32 bytes"):
        DataKeyCipher(dek_id=1, dek=bad_key)


@pytest.mark.parametrize("dek_id", [-1, 2**64])
def test_key_id_must_fit_the_header(dek_id):
    with pytest.raises(ValueError, match="8 bytes"):
        DataKeyCipher(dek_id=dek_id, dek=DEK)


@pytest.mark.parametrize("parts", [(-1, 1, 1), (1, 2**64, 1), ("7", 1, 1)])
def test_aad_parts_must_be_unsigned_64_bit_integers(cipher, parts):
    with pytest.raises((ValueError, TypeError)):
        cipher.seal(SECRET, parts)


def test_one_off_helpers_round_trip_and_read_the_key_id_from_the_header():
    blob = envelope.seal(dek=DEK, dek_id=9, plaintext=SECRET, aad_parts=PARTS)

    assert envelope.parse_header(blob) == (1, 9)
    assert envelope.open_(dek=DEK, blob=blob, aad_parts=PARTS) == SECRET
    with pytest.raises(DecryptionFailed):
        envelope.open_(dek=OTHER_DEK, blob=blob, aad_parts=PARTS)


@settings(max_examples=60, deadline=None)
@given(
    plaintext=st.binary(max_size=4096),
    dek_id=st.integers(min_value=0, max_value=2**64 - 1),
    ids=st.tuples(*(st.integers(min_value=0, max_value=2**64 - 1) for _ in range(3))),
)
def test_round_trip_for_any_plaintext_key_id_and_record(plaintext, dek_id, ids):
    cipher = DataKeyCipher(dek_id=dek_id, dek=DEK)
    blob = cipher.seal(plaintext, ids)

    assert envelope.parse_header(blob) == (1, dek_id)
    assert cipher.open(blob, ids) == plaintext
    other = (ids[0], ids[1], (ids[2] + 1) % 2**64)
    with pytest.raises(DecryptionFailed):
        cipher.open(blob, other)


# --- Record functions: the data plane's hot path -------------------------------------------------

ORG, APP, RECORD = PARTS


@pytest.fixture
def record_functions(cipher):
    return cipher.record_functions(org_id=ORG, app_instance_id=APP)


@pytest.mark.parametrize("size", [0, 1024, 4095, 4096, 16 * 1024 - 1, 16 * 1024, 65536, 1 << 20])
def test_record_functions_write_and_read_the_same_format_as_seal_and_open(
    cipher, record_functions, size
):
    seal_record, open_record = record_functions
    plaintext = os.urandom(size)

    blob = seal_record(RECORD, plaintext)

    assert blob[:9] == cipher.header == blob[:1] + (5).to_bytes(8, "big")
    assert cipher.open(blob, PARTS) == plaintext
    assert open_record(cipher.seal(plaintext, PARTS), RECORD) == plaintext
    aad = b"byok-portal/app-record" + blob[:9] + b"".join(p.to_bytes(8, "big") for p in PARTS)
    assert AESGCM(DEK).decrypt(blob[9:21], blob[21:], aad) == plaintext


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_record_functions_take_any_bytes_like_plaintext(record_functions, kind):
    seal_record, open_record = record_functions
    for size in (100, 40_000, (1 << 20) + 1):
        plaintext = os.urandom(size)
        assert open_record(seal_record(RECORD, kind(plaintext)), RECORD) == plaintext


def test_large_records_sealed_by_many_threads_at_once_stay_intact(record_functions):
    seal_record, open_record = record_functions
    failures = []

    def worker(n):
        for i in range(50):
            plaintext = bytes([n]) * (20_000 + 1000 * n + i)
            if open_record(seal_record(i, plaintext), i) != plaintext:
                failures.append((n, i))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert failures == []


def test_record_functions_fail_exactly_like_open(cipher, record_functions):
    _seal_record, open_record = record_functions
    blob = cipher.seal(SECRET, PARTS)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    relabelled = blob[:1] + (6).to_bytes(8, "big") + blob[9:]
    cases = [
        (bytes(tampered), RECORD, "failed authentication"),
        (blob, RECORD + 1, "failed authentication"),
        (relabelled, RECORD, "data key #6"),
        (b"\x02" + blob[1:], RECORD, "version 2"),
        (blob[:36], RECORD, "too short"),
        (b"", RECORD, "too short"),
    ]
    for bad, record_id, message in cases:
        with pytest.raises(DecryptionFailed, match=message) as failure:
            open_record(bad, record_id)
        assert failure.value.__context__ is None or failure.value.__suppress_context__
        assert SECRET.decode() not in str(failure.value)


@pytest.mark.parametrize("record_id", [-1, 2**64, "42"])
def test_record_functions_refuse_record_ids_outside_64_bits(record_functions, record_id):
    seal_record, open_record = record_functions
    with pytest.raises(ValueError, match="2\\*\\*64"):
        seal_record(record_id, SECRET)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        open_record(seal_record(RECORD, SECRET), record_id)
    with pytest.raises(DecryptionFailed, match="too short"):  # the size is judged first
        open_record(b"\x01", record_id)


def _outcome(fn):
    try:
        return ("opened", fn())
    except (DecryptionFailed, ValueError) as exc:
        return (type(exc).__name__, str(exc))


@settings(max_examples=80, deadline=None)
@given(
    plaintext=st.binary(max_size=6000),
    cut=st.integers(min_value=0, max_value=6100),
    flip=st.one_of(st.none(), st.integers(min_value=0, max_value=6100)),
    record_id=st.integers(min_value=41, max_value=43),
)
def test_open_record_judges_any_ciphertext_exactly_like_open(plaintext, cut, flip, record_id):
    cipher = DataKeyCipher(dek_id=5, dek=DEK)
    _seal_record, open_record = cipher.record_functions(org_id=ORG, app_instance_id=APP)
    blob = bytearray(cipher.seal(plaintext, PARTS))
    if flip is not None and flip < len(blob):
        blob[flip] ^= 0x80
    blob = bytes(blob[:cut])  # truncated when cut < its length

    assert _outcome(lambda: open_record(blob, record_id)) == _outcome(
        lambda: cipher.open(blob, (ORG, APP, record_id))
    )
