"""On PostgreSQL, links re-hash from what jsonb gives back: no false tamper alarms.

jsonb stores numbers in its own form (``1e16`` comes back as ``10000000000000000``, ``-0.0`` as
``0``, ``1.5e300`` as 301 digits). Hash format 1 (Python's json.dumps text) made such honest
rows fail ``verify_chain``; format 2 (RFC 8785, every number a double) hashes the values. The
property test records awkward values, reads them back through PostgreSQL, and checks the
portal's ``verify_chain``, ``python -m audit.verify`` and the Node.js verifier on the real JSON
export (whose records are jsonb's own text) all agree that nothing was changed.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import digests, export, selectors, verify
from audit.chain import json_dumps_bytes
from audit.filters import AuditFilters
from audit.models import AuditEvent
from audit.services import record_event, verify_chain
from tests.audit.test_canonical_values import json_values
from tests.factories import OrganizationFactory

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
NODE_VERIFIER = ROOT / "audit" / "verifier" / "verify.mjs"

pytestmark = pytest.mark.django_db


def _export(org, path: Path) -> dict:
    """The audit page's JSON export, as streamed to the browser."""
    upper = selectors.chain_head_sequence(org=org)
    body = "".join(export.json_chunks(org=org, filters=AuditFilters(), upper=upper))
    path.write_text(body)
    return json.loads(body)


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "portal.pem"
    path.write_text(digests.public_key_pem())
    return path


def _run(command: list[str]) -> tuple[int, str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    return result.returncode, result.stdout + result.stderr


def test_jsonb_rewrites_the_numbers_and_the_chain_still_verifies(tmp_path):
    written = {"n": 1e16, "z": -0.0, "huge": 1.5e300, "tiny": 5e-324}
    org = OrganizationFactory()
    event = record_event(org=org, event_name="Decrypt", request_parameters=written)
    record_event(org=org, event_name="After")

    stored = AuditEvent.objects.get(pk=event.pk).record["requestParameters"]

    assert stored["n"] == 10**16 and isinstance(stored["n"], int)  # jsonb's own form
    assert json_dumps_bytes(stored) != json_dumps_bytes(written)  # format 1 would cry wolf
    assert verify_chain(f"org:{org.pk}") is None
    digests.sign_chain_digest(chain=f"org:{org.pk}")
    path, key = tmp_path / "export.json", _key_file(tmp_path)
    _export(org, path)
    code, out = _run([sys.executable, "-m", "audit.verify", str(path), "--public-key", str(key)])
    assert code == 0 and out.startswith("OK: 2 event(s) intact"), out
    if NODE:
        code, out = _run([NODE, str(NODE_VERIFIER), str(path), "--public-key", str(key)])
        assert code == 0 and out.startswith("OK: 2 event(s) intact"), out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=st.lists(json_values, min_size=1, max_size=5))
def test_awkward_values_read_back_from_postgresql_verify_everywhere(tmp_path, values):
    org = OrganizationFactory()
    chain = f"org:{org.pk}"
    for value in values:
        record_event(org=org, event_name="Awkward", request_parameters={"v": value})

    assert verify_chain(chain) is None
    assert digests.sign_chain_digest(chain=chain) is not None  # the signer re-hashes too

    path, key = tmp_path / f"export-{org.pk}.json", _key_file(tmp_path)
    document = _export(org, path)
    report = verify.verify_export(document, digests.public_key())
    assert report.status == verify.EXIT_OK, report.problems
    assert report.events == len(values)
    if NODE:
        code, out = _run([NODE, str(NODE_VERIFIER), str(path), "--public-key", str(key)])
        assert code == 0, out
