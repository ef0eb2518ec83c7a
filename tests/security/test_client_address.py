"""The client's address behind the documented gunicorn + TLS proxy: one answer for the audit
log, the sign-in lockout and every throttle, and never the address a client made up."""

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from audit.models import AuditEvent
from audit.request_context import client_ip
from tests.factories import PASSWORD, OrganizationFactory, org_admin

PROXY = "10.0.0.2"  # the TLS proxy, as gunicorn sees it


def request_from(remote: str, forwarded: str | None = None):
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return RequestFactory().get("/", REMOTE_ADDR=remote, **extra)


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        # No proxy configured: the socket's peer, whatever the header says.
        (0, "203.0.113.9", PROXY),
        # One proxy: the address it appended (the rightmost); the client's own entries ignored.
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "6.6.6.6, 203.0.113.9", "203.0.113.9"),
        (1, " 6.6.6.6 ,203.0.113.9 ", "203.0.113.9"),
        # Two proxies (CDN, then TLS proxy): the second from the right.
        (2, "6.6.6.6, 203.0.113.9, 198.51.100.1", "203.0.113.9"),
        # Shorter than the proxy chain, missing or malformed: the peer, never the header.
        (2, "203.0.113.9", PROXY),
        (1, None, PROXY),
        (1, "", PROXY),
        (1, "6.6.6.6, not-an-address", PROXY),
        (1, "6.6.6.6, 203.0.113.9:4711", PROXY),
        (1, "6.6.6.6, " + "1" * 5000, PROXY),
        # One spelling per client: IPv6, and IPv4 reached over IPv6.
        (1, "2001:DB8::1", "2001:db8::1"),
        (1, "::ffff:203.0.113.9", "203.0.113.9"),
    ],
)
def test_the_client_is_the_nth_address_from_the_right(settings, proxies, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    assert client_ip(request_from(PROXY, forwarded)) == expected


def test_without_a_request_there_is_no_address():
    assert client_ip(None) == ""


def test_axes_uses_the_portals_function(settings):
    from axes.helpers import get_client_ip_address

    settings.TRUSTED_PROXY_COUNT = 1
    assert get_client_ip_address(request_from(PROXY, "6.6.6.6, 203.0.113.9")) == "203.0.113.9"
    assert settings.AXES_IPWARE_PROXY_ORDER == "right-most"


def sign_in(client, email, password, client_address):
    return client.post(
        reverse("login"),
        {"username": email, "password": password},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=client_address,
    )


@pytest.mark.django_db
def test_behind_the_proxy_a_lockout_locks_out_the_guesser_not_everybody(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    user = org_admin()
    attacker = Client()
    for _ in range(5):
        sign_in(attacker, user.email, "wrong-password", "203.0.113.66")
    assert sign_in(attacker, user.email, PASSWORD, "203.0.113.66").status_code == 429
    # Forging the header does not escape the lock: the proxy appends the real address.
    assert sign_in(attacker, user.email, PASSWORD, "1.2.3.4, 203.0.113.66").status_code == 429
    # The owner of the account, at another address behind the same proxy, signs in.
    assert sign_in(Client(), user.email, PASSWORD, "198.51.100.20").status_code == 302


@pytest.mark.django_db
def test_the_audit_log_records_the_client_not_the_proxy(settings, client):
    settings.TRUSTED_PROXY_COUNT = 1
    org = OrganizationFactory()
    user = org_admin(org)
    sign_in(client, user.email, PASSWORD, "6.6.6.6, 198.51.100.20")
    event = AuditEvent.objects.get(organization=org, event_name="ConsoleLogin")
    assert event.record["sourceIPAddress"] == "198.51.100.20"
