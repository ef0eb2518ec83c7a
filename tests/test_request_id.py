"""The request ID (core.request_id): one per web request, returned in ``X-Request-ID``, on every
log line written meanwhile, and the ``requestID`` of the portal's own audit events."""

import logging

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from core.request_id import RequestIdFilter, request_id_set
from tests.factories import PASSWORD, OrganizationFactory, org_admin

pytestmark = pytest.mark.django_db


def test_every_response_carries_a_new_request_id(client):
    first = client.get(reverse("healthz"))["X-Request-ID"]
    second = client.get(reverse("healthz"))["X-Request-ID"]
    assert len(first) == 36 and first != second


def test_a_well_formed_id_from_the_proxy_is_kept_and_anything_else_replaced(client):
    kept = client.get(reverse("healthz"), HTTP_X_REQUEST_ID="lb-7f3a9c2e.1")["X-Request-ID"]
    assert kept == "lb-7f3a9c2e.1"
    for hostile in ("short", "x" * 65, "evil\r\nSet-Cookie: a=b", "<script>alert(1)</script>"):
        replaced = client.get(reverse("healthz"), HTTP_X_REQUEST_ID=hostile)["X-Request-ID"]
        assert replaced != hostile and len(replaced) == 36


def test_the_portals_audit_events_carry_the_request_id_of_the_action(client):
    user = org_admin(OrganizationFactory())
    client.post(
        reverse("login"),
        {"username": user.email, "password": PASSWORD},
        HTTP_X_REQUEST_ID="req-sign-in-0001",
    )
    event = AuditEvent.objects.filter(event_name="ConsoleLogin").latest("id")
    assert event.request_id == "req-sign-in-0001" == event.record["requestID"]


def test_log_lines_carry_the_request_id_or_a_dash_outside_of_one():
    record = logging.LogRecord("byok", logging.INFO, __file__, 1, "hello", None, None)
    RequestIdFilter().filter(record)
    assert record.request_id == "-"
    with request_id_set("req-log-0001"):
        RequestIdFilter().filter(record)
    assert record.request_id == "req-log-0001"
