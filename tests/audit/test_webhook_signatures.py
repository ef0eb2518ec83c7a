"""SIEM deliveries verify with the off-the-shelf Standard Webhooks library, over real HTTP.

The receiver is a local http.server; the verifier is the ``standardwebhooks`` package, given
the secret the way docs/siem-webhooks.md tells a SIEM operator to give it.
"""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from audit import webhooks
from audit.models import WebhookDelivery
from audit.services import record_event
from audit.webhook_signing import library_secret, signing_key
from integrations.forms import WebhookForm
from tests.audit.test_webhooks import Receiver
from tests.factories import OrganizationFactory, org_admin

pytestmark = pytest.mark.django_db

WHSEC = "whsec_" + base64.b64encode(bytes(range(32))).decode()
PASSPHRASE = "a passphrase of the first wave"


@pytest.fixture
def receiver(settings):
    settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK = True
    settings.AUDIT_WEBHOOK_MAX_ATTEMPTS = 1
    settings.AUDIT_WEBHOOK_TIMEOUT_S = 5.0
    server = Receiver()
    yield server
    server.stop()


def deliver_one(receiver, secret: str, capture) -> dict:
    """Configure a webhook with ``secret``, record one event, return the request received."""
    org = OrganizationFactory()
    admin = org_admin(org)
    webhooks.configure_webhook(org=org, actor=admin, url=receiver.url, secret=secret)
    with capture(execute=True):
        event = record_event(org=org, actor=admin, event_name="RevokeKeyAccess")
    (request,) = receiver.for_event(event)
    assert WebhookDelivery.objects.get(event=event).status == "delivered"
    return request


@pytest.mark.parametrize(
    ("entered", "given_to_the_library"),
    [
        (WHSEC, WHSEC),  # a Standard Webhooks secret: as entered
        (PASSPHRASE, "whsec_" + base64.b64encode(PASSPHRASE.encode()).decode()),
        (PASSPHRASE, PASSPHRASE.encode()),  # Python's library also takes the raw bytes
    ],
    ids=["whsec", "passphrase-as-whsec", "passphrase-as-bytes"],
)
def test_a_receiver_verifies_a_real_delivery_with_the_standard_library(
    receiver, django_capture_on_commit_callbacks, entered, given_to_the_library
):
    request = deliver_one(receiver, entered, django_capture_on_commit_callbacks)

    payload = Webhook(given_to_the_library).verify(request["body"], request["headers"])

    assert payload["Records"][0]["eventName"] == "RevokeKeyAccess"


def test_a_tampered_body_is_rejected_by_the_receiver(receiver, django_capture_on_commit_callbacks):
    request = deliver_one(receiver, WHSEC, django_capture_on_commit_callbacks)
    tampered = request["body"].replace(b"RevokeKeyAccess", b"RestoreKeyAccess")
    assert tampered != request["body"]

    with pytest.raises(WebhookVerificationError):
        Webhook(WHSEC).verify(tampered, request["headers"])


def test_a_signature_moved_to_another_message_id_is_rejected(
    receiver, django_capture_on_commit_callbacks
):
    request = deliver_one(receiver, WHSEC, django_capture_on_commit_callbacks)
    replayed = {**request["headers"], "webhook-id": "msg_999999"}

    with pytest.raises(WebhookVerificationError):
        Webhook(WHSEC).verify(request["body"], replayed)


def test_the_signature_is_the_specs_hmac_over_id_timestamp_and_body(
    receiver, django_capture_on_commit_callbacks
):
    # Written from the spec, not with the library: a non-Python receiver computes this.
    request = deliver_one(receiver, WHSEC, django_capture_on_commit_callbacks)
    headers, body = request["headers"], request["body"]
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    mac = hmac.new(bytes(range(32)), signed, hashlib.sha256).digest()

    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    assert headers["webhook-timestamp"].isdigit()
    assert not any(name.lower().startswith("x-byok") for name in headers)


@pytest.mark.parametrize(
    ("stored", "key"),
    [
        (WHSEC.encode(), bytes(range(32))),
        (WHSEC.removesuffix("=").encode(), bytes(range(32))),  # unpadded, as libraries accept
        (PASSPHRASE.encode(), PASSPHRASE.encode()),
        (b"whsec_not base64 at all!", b"whsec_not base64 at all!"),
    ],
    ids=["whsec", "whsec-unpadded", "passphrase", "whsec-lookalike"],
)
def test_the_signing_key_is_read_as_the_libraries_read_the_secret(stored, key):
    assert signing_key(stored) == key


def test_the_library_secret_of_a_passphrase_signs_with_the_passphrase_bytes():
    assert library_secret(WHSEC) == WHSEC
    at = datetime(2026, 5, 1, tzinfo=UTC)
    assert Webhook(library_secret(PASSPHRASE)).sign("msg_1", at, "{}") == Webhook(
        PASSPHRASE.encode()
    ).sign("msg_1", at, "{}")


@pytest.mark.parametrize(
    ("secret", "error"),
    [
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "24 to 64 random bytes"),
        ("whsec_this is not base64 at all", "24 to 64 random bytes"),
        ("short", "at least 16"),
    ],
)
def test_the_form_refuses_a_secret_libraries_could_not_use(settings, secret, error):
    settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK = True
    form = WebhookForm({"url": "https://siem.example.com/in", "secret": secret, "enabled": "on"})
    assert not form.is_valid()
    assert error in " ".join(form.errors["secret"])


@pytest.mark.parametrize("secret", [WHSEC, PASSPHRASE])
def test_the_form_takes_a_whsec_secret_or_a_passphrase(secret):
    form = WebhookForm({"url": "https://siem.example.com/in", "secret": secret, "enabled": "on"})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["secret"] == secret


def test_the_body_holds_the_records_and_their_provenance_only(
    receiver, django_capture_on_commit_callbacks
):
    request = deliver_one(receiver, WHSEC, django_capture_on_commit_callbacks)
    assert set(json.loads(request["body"])) == {"Records", "Provenance"}
