"""Where SIEM deliveries may go: every resolved address judged, and the connection made to it.

The resolver is the module's own seam (``webhook_transport.resolve_addresses``, the one DNS
look-up), replaced here by a resolver that answers differently the second time (DNS
rebinding). The receivers are real local servers: HTTP, HTTPS with a certificate from a test
CA (trusted through ``SSL_CERT_FILE``), and an HTTP CONNECT proxy.
"""

import ipaddress
import select
import socket
import socketserver
import ssl
import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from audit import webhook_transport, webhooks
from audit.models import WebhookDelivery
from audit.services import record_event
from tests.audit.test_webhooks import Receiver
from tests.factories import OrganizationFactory, org_admin

pytestmark = pytest.mark.django_db

SIEM_HOST = "siem.example.test"  # .test never resolves: only the seam knows this name


# --- The address table ------------------------------------------------------------------------

# (address, allowed by default, allowed with AUDIT_WEBHOOK_ALLOW_PRIVATE_NETWORKS)
ADDRESSES = [
    ("8.8.8.8", True, True),
    ("2606:4700:4700::1111", True, True),
    ("10.1.2.3", False, True),
    ("169.254.169.254", False, True),
    ("fe80::1", False, True),
    ("127.0.0.1", False, False),
    ("::1", False, False),
    ("0.0.0.0", False, False),  # reaches the local host
    ("::", False, False),
    ("224.0.0.1", False, False),
    ("ff0e::1", False, False),
    # NAT64, well-known prefix: judged by the IPv4 address in the last 32 bits.
    ("64:ff9b::7f00:1", False, False),  # 127.0.0.1
    ("64:ff9b::a00:1", False, True),  # 10.0.0.1
    ("64:ff9b::a9fe:a9fe", False, True),  # 169.254.169.254
    ("64:ff9b::808:808", True, True),  # 8.8.8.8
    # NAT64, local-use prefix (RFC 8215): a private network, and no position may hide loopback.
    ("64:ff9b:1::808:808", False, True),
    ("64:ff9b:1::7f00:1", False, False),  # 127.0.0.1 at the /96 position
    ("64:ff9b:1:7f00:1::", False, False),  # 127.0.0.1 at the /48 position (u-octet skipped)
    # 6to4: the IPv4 address in bits 16–47.
    ("2002:0a00:0001::", False, True),  # 10.0.0.1
    ("2002:7f00:1::", False, False),  # 127.0.0.1
    ("2002:808:808::1", True, True),  # 8.8.8.8
    # IPv4-mapped, IPv4-translated (SIIT) and IPv4-compatible.
    ("::ffff:127.0.0.1", False, False),
    ("::ffff:10.0.0.1", False, True),
    ("::ffff:8.8.8.8", True, True),
    ("::ffff:0:7f00:1", False, False),
    ("::ffff:0:808:808", True, True),
    ("::7f00:1", False, False),
    ("::a00:1", False, True),
    ("::808:808", True, True),
    # Teredo: a tunnel through a relay, never public; and no loopback client inside either.
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False, True),
    ("2001:0:808:808:0:0:80ff:fffe", False, False),  # client 127.0.0.1 (obfuscated)
]


@pytest.mark.parametrize(("address", "by_default", "with_private"), ADDRESSES)
def test_each_address_is_judged_by_where_its_packets_go(
    settings, address, by_default, with_private
):
    settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK = False
    settings.AUDIT_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    assert webhook_transport.address_allowed(ipaddress.ip_address(address)) is by_default
    settings.AUDIT_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    assert webhook_transport.address_allowed(ipaddress.ip_address(address)) is with_private


@pytest.mark.parametrize(
    "url",
    [
        "https://[64:ff9b::7f00:1]/in",
        "https://[2002:a00:1::]/in",
        "https://[::ffff:169.254.169.254]/latest",
        "http://[::ffff:127.0.0.1]:8080/in",
    ],
)
def test_a_literal_address_carrying_a_private_ipv4_is_refused_when_saved(settings, url):
    settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK = False
    with pytest.raises(webhooks.WebhookRefused, match="reachable on the internet"):
        webhooks.validate_webhook_url(url)


# --- Resolving once ---------------------------------------------------------------------------


class RebindingResolver:
    """Answers the first look-up with ``first``, every later one with ``later``."""

    def __init__(self, first: list[str], later: list[str]):
        self.first, self.later = first, later
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.first if len(self.calls) == 1 else self.later


def _tls_files(tmp_path, hostname: str) -> tuple[str, str, str]:
    """A test CA and a server certificate for ``hostname``: (ca.pem, cert.pem, key.pem)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BYOK webhook test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tuple(str(p) for p in paths)


@pytest.fixture
def tls_receiver(settings, tmp_path, monkeypatch):
    """An HTTPS receiver with a certificate for ``certified`` (default: SIEM_HOST)."""
    settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK = True
    settings.AUDIT_WEBHOOK_MAX_ATTEMPTS = 1
    settings.AUDIT_WEBHOOK_TIMEOUT_S = 3.0
    started = []

    def start(certified: str = SIEM_HOST) -> Receiver:
        ca, cert, key = _tls_files(tmp_path, certified)
        monkeypatch.setenv("SSL_CERT_FILE", ca)  # the client trusts the test CA (only)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = Receiver(tls=context)
        server.server_names = []
        context.sni_callback = lambda sock, name, ctx: server.server_names.append(name)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def deliver(django_capture_on_commit_callbacks):
    def deliver(url: str) -> WebhookDelivery:
        org = OrganizationFactory()
        admin = org_admin(org)
        webhooks.configure_webhook(org=org, actor=admin, url=url, secret="s" * 24)
        with django_capture_on_commit_callbacks(execute=True):
            event = record_event(org=org, actor=admin, event_name="RevokeKeyAccess")
        return WebhookDelivery.objects.get(event=event)

    return deliver


def test_the_connection_goes_to_the_address_that_was_checked(tls_receiver, deliver, monkeypatch):
    receiver = tls_receiver()
    resolver = RebindingResolver(first=["127.0.0.1"], later=["10.9.9.9"])
    monkeypatch.setattr(webhook_transport, "resolve_addresses", resolver)

    delivery = deliver(f"https://{SIEM_HOST}:{receiver.port}/in")

    assert delivery.status == "delivered", delivery.last_error
    assert resolver.calls == [(SIEM_HOST, receiver.port)]  # one look-up, no second chance
    (request,) = receiver.requests
    assert request["headers"]["Host"] == f"{SIEM_HOST}:{receiver.port}"
    assert receiver.server_names == [SIEM_HOST]  # SNI names the URL's host, not the address


def test_a_certificate_for_another_name_fails_the_attempt(tls_receiver, deliver, monkeypatch):
    receiver = tls_receiver(certified="other.example.test")
    monkeypatch.setattr(webhook_transport, "resolve_addresses", lambda host, port: ["127.0.0.1"])

    delivery = deliver(f"https://{SIEM_HOST}:{receiver.port}/in")

    assert delivery.status == "failed" and receiver.requests == []
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.last_error


def test_a_name_whose_first_answer_is_private_is_refused_for_good(
    tls_receiver, deliver, monkeypatch
):
    receiver = tls_receiver()
    resolver = RebindingResolver(first=["10.0.0.7"], later=["127.0.0.1"])
    monkeypatch.setattr(webhook_transport, "resolve_addresses", resolver)

    delivery = deliver(f"https://{SIEM_HOST}:{receiver.port}/in")

    assert delivery.status == "failed" and delivery.attempts == 1  # permanent: no retries
    assert "resolves to 10.0.0.7, which is not a public address" in delivery.last_error
    assert len(resolver.calls) == 1 and receiver.requests == []


def test_every_resolved_address_must_pass(tls_receiver, deliver, monkeypatch):
    receiver = tls_receiver()
    monkeypatch.setattr(
        webhook_transport, "resolve_addresses", lambda host, port: ["127.0.0.1", "64:ff9b::a00:1"]
    )

    delivery = deliver(f"https://{SIEM_HOST}:{receiver.port}/in")

    assert delivery.status == "failed" and "64:ff9b::a00:1" in delivery.last_error
    assert receiver.requests == []


def test_a_checked_address_that_does_not_answer_falls_back_to_the_next(
    tls_receiver, deliver, monkeypatch
):
    receiver = tls_receiver()
    # 127.0.0.2 is loopback too, and nothing listens there on the receiver's port.
    monkeypatch.setattr(
        webhook_transport, "resolve_addresses", lambda host, port: ["127.0.0.2", "127.0.0.1"]
    )

    delivery = deliver(f"https://{SIEM_HOST}:{receiver.port}/in")

    assert delivery.status == "delivered", delivery.last_error
    assert len(receiver.requests) == 1


# --- Through the egress proxy -----------------------------------------------------------------


class ConnectProxy:
    """An HTTP CONNECT proxy that records each tunnel's target and relays to loopback."""

    def __init__(self):
        self.targets: list[str] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                reader = self.request.makefile("rb")
                target = reader.readline().decode().split()[1]
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                proxy.targets.append(target)
                host, _, port = target.rpartition(":")
                if host != "127.0.0.1":  # this proxy reaches the test's loopback only
                    self.request.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                    return
                with socket.create_connection((host, int(port)), timeout=5) as upstream:
                    self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    _relay(self.request, upstream)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _relay(a: socket.socket, b: socket.socket) -> None:
    while True:
        readable, _, _ = select.select([a, b], [], [], 5)
        if not readable:
            return
        for source in readable:
            data = source.recv(65536)
            if not data:
                return
            (b if source is a else a).sendall(data)


def test_through_the_proxy_the_tunnel_opens_to_the_checked_address(
    tls_receiver, deliver, monkeypatch, settings
):
    receiver = tls_receiver()
    proxy = ConnectProxy()
    settings.AUDIT_WEBHOOK_PROXY = proxy.url
    resolver = RebindingResolver(first=["127.0.0.1"], later=["10.9.9.9"])
    monkeypatch.setattr(webhook_transport, "resolve_addresses", resolver)
    try:
        delivery = deliver(f"https://{SIEM_HOST}:{receiver.port}/in")
    finally:
        proxy.stop()

    assert delivery.status == "delivered", delivery.last_error
    assert proxy.targets == [f"127.0.0.1:{receiver.port}"]  # the proxy resolves nothing
    assert receiver.server_names == [SIEM_HOST]
    assert receiver.requests[0]["headers"]["Host"] == f"{SIEM_HOST}:{receiver.port}"
