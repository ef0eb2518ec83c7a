"""The stand-alone verifier: `python -m audit.verify EXPORT.json --public-key KEY`."""

import base64
import copy
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from freezegun import freeze_time

from audit import chain as portal_chain
from audit import digests, verify
from audit.services import record_event
from tests.factories import OrganizationFactory, org_admin

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _raw_key_text(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


@pytest.fixture
def exported(tmp_path):
    """An org with 9 events and digests at links 3, 6, 8 and 9; its export and the public key."""
    org = OrganizationFactory()
    for batch in (3, 3, 2, 1):
        for i in range(batch):
            record_event(org=org, event_name=f"Action{i}", request_parameters={"batch": batch})
        digests.sign_chain_digests()
    document = digests.export_document(org=org)
    key_file = tmp_path / "portal.pem"
    key_file.write_text(digests.public_key_pem())
    return {"org": org, "document": document, "key_file": key_file, "tmp": tmp_path}


def run(exported, document=None, *extra, capsys=None) -> tuple[int, str]:
    path = exported["tmp"] / "export.json"
    path.write_text(json.dumps(exported["document"] if document is None else document))
    code = verify.main([str(path), "--public-key", str(exported["key_file"]), *extra])
    return code, capsys.readouterr().out if capsys else ""


def test_a_fully_signed_export_verifies(exported, capsys):
    code, out = run(exported, capsys=capsys)
    assert code == verify.EXIT_OK == 0, out
    assert [d["sequence"] for d in exported["document"]["Digests"]] == [3, 6, 8, 9]
    assert "OK: 9 event(s) intact; 4 digest(s) verified" in out


@freeze_time("2025-05-01 12:20:00")
def test_an_export_whose_newest_events_are_not_signed_yet_says_when_they_will_be(exported, capsys):
    org = exported["org"]
    with freeze_time("2025-05-01 12:00:00"):
        digests.sign_chain_digests()  # nothing moved: the last digest stays at link 9
        record_event(org=org, event_name="Later")
        digests.sign_chain_digests()  # link 10, at 12:00
    record_event(org=org, event_name="Newest")  # links 11 and 12: after the newest digest
    record_event(org=org, event_name="Newest")
    document = digests.export_document(org=org)
    assert document["DigestSchedule"] == {
        "intervalSeconds": 3600,
        "nextDigestAt": "2025-05-01T13:00:00Z",
    }

    code, out = run(exported, document, capsys=capsys)

    assert code == verify.EXIT_NOT_YET_SIGNED == 3, out
    (verdict,) = out.splitlines()
    assert verdict.startswith("NOT YET SIGNED: the chain is intact (12 event(s))")
    assert "every event up to link 10 is vouched for" in verdict
    assert "the newest 2 event(s) (links 11–12) are not signed yet" in verdict
    assert "the next one was due at about 2025-05-01T13:00:00Z" in verdict
    assert "FAILED" not in out


def test_an_export_nothing_has_signed_yet_is_not_called_tampered(exported, capsys):
    document = copy.deepcopy(exported["document"])
    document["Digests"] = []
    code, out = run(exported, document, capsys=capsys)
    assert code == verify.EXIT_UNSIGNED == 4, out
    assert out.startswith("UNSIGNED: the chain is intact (9 event(s), links 1–9), but no signed")
    assert "FAILED" not in out and "changed" not in out


def test_the_verifier_runs_stand_alone_without_django(exported):
    path = exported["tmp"] / "export.json.gz"
    path.write_bytes(gzip.compress(json.dumps(exported["document"]).encode()))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, sys; sys.argv = ['verify'] + sys.argv[1:]; "
            "code = 0\n"
            "try:\n    runpy.run_module('audit.verify', run_name='__main__')\n"
            "except SystemExit as exit:\n    code = exit.code\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'django'], 'django loaded'\n"
            "sys.exit(code)",
            str(path),
            "--public-key",
            str(exported["key_file"]),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK:" in result.stdout
    # And as documented, with `-m`.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "audit.verify",
            str(path),
            "--public-key",
            str(exported["key_file"]),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_export_with_an_event_removed_is_rejected(exported, capsys):
    document = copy.deepcopy(exported["document"])
    del document["Records"][4], document["Chain"][4]  # link 5
    code, out = run(exported, document, capsys=capsys)
    assert code == 1
    assert "1 event(s) missing between link 4 and link 6" in out


def test_an_export_with_a_signed_link_removed_is_rejected(exported, capsys):
    document = copy.deepcopy(exported["document"])
    del document["Records"][5], document["Chain"][5]  # link 6, named by a digest
    code, out = run(exported, document, "--allow-gaps", capsys=capsys)
    assert code == 0, out  # a filtered export may lack it: noted, not failed
    assert "Link 6 is missing from the export" in out
    code, out = run(exported, document, capsys=capsys)
    assert code == 1 and "Link 6 is missing from the export" in out


def test_an_export_with_an_event_edited_is_rejected(exported, capsys):
    document = copy.deepcopy(exported["document"])
    document["Records"][2]["requestParameters"] = {"batch": "edited"}
    code, out = run(exported, document, capsys=capsys)
    assert code == 1
    assert "Link 3 (event" in out and "the record was changed" in out


def test_an_edit_with_recomputed_hashes_is_caught_by_the_digests(exported, capsys):
    document = copy.deepcopy(exported["document"])
    chain = document["ChainName"]
    document["Records"][1]["eventName"] = "Forged"
    prev = document["Chain"][0]["hash"]
    for record, entry in zip(document["Records"][1:], document["Chain"][1:], strict=True):
        entry["prevHash"] = prev
        entry["hash"] = prev = portal_chain.link_hash(
            chain=chain, sequence=entry["sequence"], prev_hash=prev, record=record
        )
    code, out = run(exported, document, capsys=capsys)
    assert code == 1
    assert "Link 3 does not match the digest of link 3" in out and "rewritten" in out


@pytest.mark.parametrize("which", ["records", "both"])
def test_an_export_with_events_reordered_is_rejected(exported, capsys, which):
    document = copy.deepcopy(exported["document"])
    lists = ["Records"] if which == "records" else ["Records", "Chain"]
    for name in lists:
        items = document[name]
        items[3], items[4] = items[4], items[3]
    code, out = run(exported, document, capsys=capsys)
    assert code == 1
    assert ("re-ordered" in out) or ("comes after" in out)


def test_an_export_signed_by_another_key_is_rejected(exported, settings, capsys):
    org = exported["org"]
    settings.AUDIT_SIGNING_KEY = _raw_key_text(Ed25519PrivateKey.generate())
    record_event(org=org, event_name="Later")
    digests.sign_chain_digests()  # link 10, signed by the other key
    document = digests.export_document(org=org)

    code, out = run(exported, document, capsys=capsys)

    assert code == 1
    assert "The digest of link 10" in out and "signed by another key" in out


def test_a_digest_with_a_forged_signature_is_rejected(exported, capsys):
    document = copy.deepcopy(exported["document"])
    forger = Ed25519PrivateKey.generate()
    document["Digests"][1]["signature"] = base64.b64encode(forger.sign(b"anything")).decode()
    code, out = run(exported, document, capsys=capsys)
    assert code == 1 and "The digest of link 6" in out and "invalid signature" in out


def test_a_public_key_other_than_the_portals_rejects_the_export(exported, capsys, tmp_path):
    other = Ed25519PrivateKey.generate().public_key()
    exported["key_file"].write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    code, out = run(exported, capsys=capsys)
    assert code == 1 and out.count("signed by another key") == 4


def test_a_digest_removed_from_the_export_is_detected(exported, capsys):
    document = copy.deepcopy(exported["document"])
    del document["Digests"][1]
    code, out = run(exported, document, capsys=capsys)
    assert code == 1 and "a digest between them is missing" in out


def test_a_newest_first_export_verifies(exported, capsys):
    document = copy.deepcopy(exported["document"])
    document["Records"].reverse()
    document["Chain"].reverse()
    assert run(exported, document, capsys=capsys)[0] == 0


def test_an_edited_export_without_digests_is_still_tampered(exported, capsys):
    document = copy.deepcopy(exported["document"])
    document["Digests"] = []
    document["Records"][0]["eventName"] = "Forged"
    code, out = run(exported, document, capsys=capsys)
    assert code == 1 and "Link 1 (event" in out and "the record was changed" in out


@pytest.mark.parametrize(
    "text",
    ["{not json", '{"Records": [], "Chain": [], "x": NaN}', "[" * 600 + "]" * 600],
    ids=["not-json", "nan", "too-deep"],
)
def test_an_unreadable_export_exits_2(exported, capsys, text):
    path = exported["tmp"] / "broken.json"
    path.write_text(text)
    assert verify.main([str(path), "--public-key", str(exported["key_file"])]) == 2
    assert "ERROR:" in capsys.readouterr().err


@pytest.mark.parametrize("hash_format", [1, 2])
def test_the_verifiers_hashing_is_the_portals(hash_format):
    record = {"eventID": "e", "b": [1, "ü", {"z": None, "a": 1.5, "n": 1e16}], "a": True}
    link = {"chain": "org:7", "sequence": 3, "prev_hash": "ab", "record": record}
    assert verify.link_hash(**link, hash_format=hash_format) == (
        portal_chain.link_hash(**link, hash_format=hash_format)
    )
    digest = {field: f"v-{field}" for field in portal_chain.DIGEST_SIGNED_FIELDS}
    assert verify.digest_message(digest | {"signature": "s"}) == portal_chain.digest_message(digest)
    assert verify.GENESIS_HASH == portal_chain.GENESIS_HASH


def test_the_portals_own_json_export_verifies_offline(exported, client, capsys):
    org = exported["org"]
    client.force_login(org_admin(org))
    digests.sign_chain_digests()  # the sign-in may have added an event
    response = client.get(f"/orgs/{org.pk}/audit/?format=json")
    assert response.status_code == 200
    document = json.loads(b"".join(response.streaming_content))
    assert [d["sequence"] for d in document["Digests"]][:4] == [3, 6, 8, 9]

    code, out = run(exported, document, capsys=capsys)

    assert code == 0, out
    edited = copy.deepcopy(document)
    edited["Records"][0]["eventName"] = "Forged"
    assert run(exported, edited, capsys=capsys)[0] == 1


def test_the_demo_signs_a_first_digest_so_a_fresh_export_verifies(tmp_path, capsys):
    from demo.seed import sign_first_digests

    org = OrganizationFactory()
    for i in range(3):
        record_event(org=org, event_name=f"Seeded{i}")

    assert "chain(s) signed" in sign_first_digests()

    key_file = tmp_path / "portal.pem"
    key_file.write_text(digests.public_key_pem())
    code, out = run(
        {"tmp": tmp_path, "key_file": key_file, "document": digests.export_document(org=org)},
        capsys=capsys,
    )
    assert code == 0 and out.startswith("OK: 3 event(s) intact"), out
