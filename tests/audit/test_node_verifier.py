"""The independent Node.js verifier (audit/verifier/verify.mjs, written from
docs/audit-format.md) agrees with `python -m audit.verify` on the same exports."""

import contextlib
import copy
import gzip
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import chain as portal_chain
from audit import digests, verify
from audit.services import record_event
from tests.audit.test_canonical_values import json_values
from tests.audit.test_chain import legacy_record, write_legacy_links
from tests.factories import OrganizationFactory, org_admin

ROOT = Path(__file__).resolve().parents[2]
NODE_VERIFIER = ROOT / "audit" / "verifier" / "verify.mjs"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(NODE is None, reason="node (Node.js 20) is not installed: cannot run it"),
]


def node_verify(path: Path, key_file: Path, *extra: str) -> tuple[int, str]:
    result = subprocess.run(
        [NODE, str(NODE_VERIFIER), str(path), "--public-key", str(key_file), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def python_verify(path: Path, key_file: Path, *extra: str) -> tuple[int, str]:
    """``python -m audit.verify`` in-process (tests/audit/test_verify_offline.py runs it as a
    separate program too)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = verify.main([str(path), "--public-key", str(key_file), *extra])
    return code, out.getvalue() + err.getvalue()


def verdict_word(output: str) -> str:
    last = [line for line in output.splitlines() if line.strip()][-1]
    return last.split(":", 1)[0]


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "portal.pem"
    path.write_text(digests.public_key_pem())
    return path


def both_agree(tmp_path, key_file, document, *extra, name="export.json") -> int:
    """Run both verifiers on ``document``; assert the same exit status and verdict."""
    path = tmp_path / name
    data = json.dumps(document, ensure_ascii=False).encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    py_code, py_out = python_verify(path, key_file, *extra)
    node_code, node_out = node_verify(path, key_file, *extra)
    assert (node_code, verdict_word(node_out)) == (py_code, verdict_word(py_out)), (
        f"python said:\n{py_out}\nnode said:\n{node_out}"
    )
    return py_code


def _signed_org(n_batches=(3, 2, 2)):
    org = OrganizationFactory()
    for batch in n_batches:
        for i in range(batch):
            record_event(org=org, event_name=f"Action{i}", request_parameters={"i": i, "f": 0.5})
        digests.sign_chain_digests()
    return org


def _rehash_from(document, index):
    """Recompute every link from ``index`` on, as a forger with the hashes' recipe would."""
    chain = document["ChainName"]
    prev = document["Chain"][index - 1]["hash"] if index else portal_chain.GENESIS_HASH
    for record, entry in zip(document["Records"][index:], document["Chain"][index:], strict=True):
        entry["prevHash"] = prev
        entry["hash"] = prev = portal_chain.link_hash(
            chain=chain, sequence=entry["sequence"], prev_hash=prev, record=record
        )


SCENARIOS = {
    "intact": (lambda d: d, 0),
    "tampered-record": (lambda d: d["Records"][1].update(eventName="Forged"), 1),
    "deleted-event": (lambda d: (d["Records"].pop(3), d["Chain"].pop(3)), 1),
    "reordered": (lambda d: d["Records"].reverse(), 1),
    "forged-signature": (lambda d: d["Digests"][0].update(signature="A" * 86 + "=="), 1),
    "digest-removed": (lambda d: d["Digests"].pop(1), 1),
    "rewritten-chain": (
        lambda d: (d["Records"][1].update(eventName="Forged"), _rehash_from(d, 1)),
        1,
    ),
    "unknown-hash-format": (lambda d: d["Chain"][2].update(hashFormat=7), 1),
    "unsigned-tail": (lambda d: d["Digests"].pop(), 3),
    "nothing-signed": (lambda d: d["Digests"].clear(), 4),
    "newest-first": (lambda d: (d["Records"].reverse(), d["Chain"].reverse()), 0),
    "no-chain": (lambda d: d.pop("Chain"), 2),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_both_verifiers_agree_on_the_same_export(tmp_path, key_file, scenario):
    org = _signed_org()
    document = copy.deepcopy(digests.export_document(org=org))
    change, expected = SCENARIOS[scenario]
    change(document)
    assert both_agree(tmp_path, key_file, document) == expected


def test_both_verifiers_read_gzip_exports(tmp_path, key_file):
    document = digests.export_document(org=_signed_org())
    assert both_agree(tmp_path, key_file, document, name="export.json.gz") == 0


def test_both_verifiers_agree_on_a_chain_with_links_from_before_format_2(tmp_path, key_file):
    org = OrganizationFactory()
    write_legacy_links(
        org,
        [
            legacy_record("Old", n=1.5, big=1e16, tiny=1e-05, whole=3.0, neg=-0.0),
            legacy_record("Old2", who="ü\u2028", sorted={"\U0001f600": 1, "\ufb01": 2}),
        ],
    )
    record_event(org=org, event_name="New", request_parameters={"n": 1e16})
    digests.sign_chain_digests()
    document = digests.export_document(org=org)
    assert [entry["hashFormat"] for entry in document["Chain"]] == [1, 1, 2]
    assert both_agree(tmp_path, key_file, document) == 0

    document["Records"][0]["requestParameters"]["n"] = 1.25
    assert both_agree(tmp_path, key_file, document) == 1


def test_both_verifiers_agree_on_the_portals_filtered_export(tmp_path, key_file, client):
    org = _signed_org()
    record_event(org=org, event_name="Decrypt", error_code="DisabledException")
    client.force_login(org_admin(org))
    digests.sign_chain_digests()
    response = client.get(f"/orgs/{org.pk}/audit/?format=json&errors_only=on")
    document = json.loads(b"".join(response.streaming_content))
    assert len(document["Records"]) == 1
    # Its one link lies between two digests, which the filtered export cannot connect it to.
    assert both_agree(tmp_path, key_file, document, "--allow-gaps") == 4


@pytest.mark.parametrize(
    "text",
    ["{not json", '{"Records": [], "Chain": [], "x": NaN}', "[" * 600 + "]" * 600, "[]"],
    ids=["not-json", "nan", "too-deep", "not-an-export"],
)
def test_both_verifiers_call_unusable_input_unusable(tmp_path, key_file, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert python_verify(path, key_file)[0] == node_verify(path, key_file)[0] == 2


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=st.lists(json_values, min_size=1, max_size=4))
def test_both_verifiers_agree_on_awkward_values(tmp_path, key_file, values):
    org = OrganizationFactory()
    for value in values:
        record_event(org=org, event_name="Awkward", request_parameters={"v": value})
    digests.sign_chain_digests()
    document = digests.export_document(org=org)
    assert both_agree(tmp_path, key_file, document) == 0


_HASH_BATCH = """
import { readFileSync } from "node:fs";
import { linkHash, parseJson } from "%s";
const records = parseJson(readFileSync(process.argv[1], "utf8"));
const out = [];
for (const record of records) {
  out.push([1n, 2n].map((f) => { try { return linkHash("org:1", 1n, "ab", record, f); }
                                 catch (e) { return null; } }));
}
console.log(JSON.stringify(out));
"""


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(json_values, min_size=20, max_size=40))
def test_node_hashes_both_formats_exactly_like_python(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("hash") / "values.json"
    text = json.dumps([{"v": value} for value in values], ensure_ascii=False)
    path.write_text(text)
    script = _HASH_BATCH % NODE_VERIFIER.as_uri()
    result = subprocess.run(
        [NODE, "--input-type=module", "-e", script, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    node_hashes = json.loads(result.stdout)
    for record, from_node in zip(json.loads(text), node_hashes, strict=True):
        expected = [
            verify.link_hash(
                chain="org:1", sequence=1, prev_hash="ab", record=record, hash_format=f
            )
            for f in (1, 2)
        ]
        assert from_node == expected, record
