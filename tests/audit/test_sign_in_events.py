import pytest

from audit.models import AuditEvent
from tests.factories import PASSWORD, OrganizationFactory, org_admin

pytestmark = pytest.mark.django_db


def test_login_and_logout_are_recorded_in_the_users_org(client):
    org = OrganizationFactory()
    user = org_admin(org)
    client.post("/accounts/login/", {"username": user.email, "password": PASSWORD})
    client.post("/accounts/logout/")
    names = list(
        AuditEvent.objects.filter(organization=org)
        .order_by("sequence")
        .values_list("event_name", flat=True)
    )
    assert names == ["ConsoleLogin", "ConsoleLogout"]
    login = AuditEvent.objects.get(organization=org, event_name="ConsoleLogin")
    assert login.principal == user.email
    assert login.record["responseElements"] == {"ConsoleLogin": "Success"}


def test_failed_login_is_recorded_without_the_password(client):
    org = OrganizationFactory()
    user = org_admin(org)
    client.post("/accounts/login/", {"username": user.email, "password": "wrong-guess-123"})
    event = AuditEvent.objects.get(organization=org)
    assert event.error_code == "Failed authentication"
    assert event.record["responseElements"] == {"ConsoleLogin": "Failure"}
    # Counted per address and window (tests/security/test_failed_sign_in_events.py).
    assert event.record["requestParameters"]["failureCount"] == 1
    assert "wrong-guess-123" not in str(event.record)


def test_failed_login_for_unknown_address_goes_to_the_vendor_chain(client):
    client.post("/accounts/login/", {"username": "nobody@example.com", "password": "x"})
    event = AuditEvent.objects.get()
    assert event.organization is None
    assert event.principal == "nobody@example.com"
