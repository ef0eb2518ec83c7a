"""The network side of SIEM delivery: where a webhook may point, and one POST to it.

Server-side request forgery is the risk: an org admin chooses the URL, and the portal's
workers sit inside the vendor's network. So:

* **Every resolved address is judged** (:func:`address_allowed`): public addresses pass;
  loopback only with ``AUDIT_WEBHOOK_ALLOW_LOOPBACK`` (DEBUG, tests); private, link-local and
  other non-public ones only with ``AUDIT_WEBHOOK_ALLOW_PRIVATE_NETWORKS``; multicast never.
  An IPv6 address that carries an IPv4 address — IPv4-mapped ``::ffff:0:0/96``,
  IPv4-translated ``::ffff:0:0:0/96``, IPv4-compatible ``::/96``, NAT64 ``64:ff9b::/96``,
  6to4 ``2002::/16`` — is judged by the IPv4 address it carries, because that is where the
  packets end up (``64:ff9b::7f00:1`` is 127.0.0.1). The local-use NAT64 prefix
  ``64:ff9b:1::/48`` (RFC 8215) is a private network whose IPv4 position depends on the
  operator's prefix length, so no RFC 6052 position may carry a refused address either;
  Teredo likewise needs its server and client addresses allowed.
* **The host name is resolved once** (:func:`resolve_addresses`, the module's one DNS call)
  and the connection goes to an address that passed the check, never to the name: a resolver
  that answers differently the second time (DNS rebinding) cannot redirect the request. The
  request carries the URL's ``Host`` header, and HTTPS verifies the certificate against the
  URL's host name (SNI). Through ``AUDIT_WEBHOOK_PROXY`` the tunnel is opened (``CONNECT``)
  to the checked address, not to the name.
* Redirects are not followed: the signed request was meant for this URL only.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from django.conf import settings

USER_AGENT = "byok-portal-webhook/2"
#: Checked addresses tried in turn when one does not accept the connection.
MAX_ADDRESSES_TRIED = 3

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_LOOPBACK_OR_UNSPECIFIED_V6 = (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1"))
# Prefixes that only carry an IPv4 address: the IPv4 address alone decides.
_TRANSLATION_PREFIXES = (
    _IPV4_MAPPED,
    _IPV4_TRANSLATED,
    _NAT64_WELL_KNOWN,
    _SIX_TO_FOUR,
    _IPV4_COMPATIBLE,
)


class DestinationRefused(Exception):
    """Deliveries may not go to this URL or the addresses it resolves to (message says why)."""


@dataclass(frozen=True)
class PostOutcome:
    ok: bool
    status_code: int | None
    error: str
    permanent: bool = False


@dataclass(frozen=True)
class Destination:
    """A webhook URL taken apart, with the addresses that passed the check."""

    secure: bool
    hostname: str  # ASCII (IDNA) form: the Host header, SNI and certificate name
    port: int
    path: str
    addresses: tuple[str, ...] = ()

    @property
    def host_header(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


# --- Judging addresses ---------------------------------------------------------------------------


def _rfc6052_ipv4(address: ipaddress.IPv6Address, prefix_length: int) -> ipaddress.IPv4Address:
    """The IPv4 address at RFC 6052's position for ``prefix_length`` (bits 64–71 are skipped)."""
    b = address.packed
    carried = {96: b[12:16], 64: b[9:13], 56: b[7:8] + b[9:12], 48: b[6:8] + b[9:11]}
    return ipaddress.IPv4Address(carried[prefix_length])


def carried_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 address(es) an IPv6 address stands for; empty when it carries none."""
    if address.version == 4 or address in _LOOPBACK_OR_UNSPECIFIED_V6:
        return ()
    if address in _NAT64_LOCAL_USE:
        # Every position the operator's prefix length may use; all zeros is another
        # length's padding, not an address.
        positions = {_rfc6052_ipv4(address, n) for n in (48, 56, 64, 96)}
        return tuple(sorted(positions - {ipaddress.IPv4Address(0)}))
    if address in _TEREDO:
        return address.teredo or ()
    if address in _SIX_TO_FOUR:
        return (address.sixtofour,)
    if any(address in prefix for prefix in _TRANSLATION_PREFIXES):
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    return ()


def _judge(address: IPAddress) -> bool:
    if address.is_multicast:
        return False
    # 0.0.0.0 and :: reach the local host on Linux: treated as loopback.
    if address.is_loopback or address.is_unspecified:
        return settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK
    if address.is_global and address not in _NAT64_LOCAL_USE:
        return True
    return settings.AUDIT_WEBHOOK_ALLOW_PRIVATE_NETWORKS


def address_allowed(address: IPAddress) -> bool:
    """Whether deliveries may connect to ``address`` under the current settings."""
    carried = carried_ipv4(address)
    if carried and any(address in prefix for prefix in _TRANSLATION_PREFIXES):
        return all(_judge(v4) for v4 in carried)
    return _judge(address) and all(_judge(v4) for v4 in carried)


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback_host(host: str) -> bool:
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return True
    literal = _literal_address(host)
    if literal is None:
        return False
    carried = carried_ipv4(literal)
    return literal.is_loopback or any(v4.is_loopback for v4 in carried)


# --- The URL -------------------------------------------------------------------------------------


def parse_destination(url: str) -> Destination:
    """The URL taken apart if deliveries may go there by its form; :class:`DestinationRefused`.

    No DNS here (the settings page calls it): a literal address is judged now, a host name at
    every attempt by :func:`check_destination`.
    """
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError as exc:
        raise DestinationRefused("Enter a valid URL.") from exc
    if parts.scheme not in ("https", "http") or not host:
        raise DestinationRefused("Enter an https:// URL.")
    if parts.username or parts.password:
        raise DestinationRefused(
            "Leave credentials out of the URL: the shared secret signs requests."
        )
    try:
        hostname = host if _literal_address(host) else host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise DestinationRefused("Enter a valid host name.") from exc
    loopback = _is_loopback_host(hostname)
    if loopback and not settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK:
        raise DestinationRefused("The webhook must be reachable on the internet.")
    if parts.scheme == "http" and not loopback:
        raise DestinationRefused("Use https:// — events are only sent over TLS.")
    literal = _literal_address(hostname)
    if literal is not None and not address_allowed(literal):
        raise DestinationRefused("The webhook must be reachable on the internet.")
    secure = parts.scheme == "https"
    return Destination(
        secure=secure,
        hostname=hostname,
        port=port or (443 if secure else 80),
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )


def resolve_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order: the one DNS look-up.

    Tests replace this function (the network boundary) to play a rebinding resolver.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_destination(url: str) -> Destination:
    """The destination with its checked addresses: resolved once, every address judged."""
    destination = parse_destination(url)
    checked = []
    for raw in resolve_addresses(destination.hostname, destination.port):
        address = _literal_address(raw.split("%", 1)[0])  # a scope ("%eth0") names no network
        if address is None or not address_allowed(address):
            raise DestinationRefused(
                f"{destination.hostname} resolves to {raw}, which is not a public address."
            )
        checked.append(str(address))
    if not checked:
        raise OSError(f"cannot resolve {destination.hostname}: no address")
    return replace(destination, addresses=tuple(checked))


# --- Connecting to the checked address ----------------------------------------------------------


class _CheckedAddressConnection(http.client.HTTPConnection):
    """HTTP(S) to one checked address: TCP (or a proxy tunnel) to the IP, TLS to the name."""

    def __init__(self, destination: Destination, address: str, *, timeout: float):
        proxy = urlsplit(settings.AUDIT_WEBHOOK_PROXY) if settings.AUDIT_WEBHOOK_PROXY else None
        if proxy:
            super().__init__(proxy.hostname, proxy.port or 3128, timeout=timeout)
            # CONNECT to the checked address, bracketed if IPv6: the proxy does no DNS.
            self.set_tunnel(f"[{address}]" if ":" in address else address, destination.port)
        else:
            super().__init__(address, destination.port, timeout=timeout)
        self._tls_hostname = destination.hostname if destination.secure else None

    def connect(self) -> None:
        super().connect()
        if self._tls_hostname:
            # Certificate and host name checked against the URL's host, which SNI names.
            context = ssl.create_default_context()
            self.sock = context.wrap_socket(self.sock, server_hostname=self._tls_hostname)


def _open(destination: Destination, timeout: float) -> http.client.HTTPConnection:
    error: OSError = OSError(f"cannot connect to {destination.hostname}")
    for address in destination.addresses[:MAX_ADDRESSES_TRIED]:
        connection = _CheckedAddressConnection(destination, address, timeout=timeout)
        try:
            connection.connect()
        except OSError as exc:  # ssl.SSLError included
            connection.close()
            error = exc
        else:
            return connection
    raise error


def post(*, url: str, body: bytes, headers: dict[str, str]) -> PostOutcome:
    """One POST of ``body`` to ``url`` (a timeout, TLS verified, no redirects, no second DNS)."""
    try:
        destination = check_destination(url)
    except DestinationRefused as exc:
        return PostOutcome(False, None, str(exc), permanent=True)
    except OSError as exc:
        return PostOutcome(False, None, str(exc))
    all_headers = {
        **headers,
        "Host": destination.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    try:
        connection = _open(destination, settings.AUDIT_WEBHOOK_TIMEOUT_S)
    except OSError as exc:
        return PostOutcome(False, None, f"{type(exc).__name__}: {exc}")
    try:
        connection.request("POST", destination.path, body=body, headers=all_headers)
        response = connection.getresponse()
        detail = response.read(200).decode("utf-8", "replace").strip()
        status, reason = response.status, response.reason
    except (http.client.HTTPException, OSError) as exc:
        return PostOutcome(False, None, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
    if 200 <= status < 300:
        return PostOutcome(True, status, "")
    return PostOutcome(False, status, f"HTTP {status} {reason} {detail}".strip()[:300])
