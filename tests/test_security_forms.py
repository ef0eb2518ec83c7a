"""Property-based tests over the customer- and staff-facing forms: whatever is typed or put in
the URL, the answer is never a 500, and a write is whole or absent (no partial write).

Each example runs in a savepoint that is rolled back, so every example starts from the same
state. The setup request form has its own in tests/keys/test_setup_form.py.
"""

from contextlib import contextmanager

import pytest
from django.db import transaction
from django_otp import DEVICE_ID_SESSION_KEY
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from audit.models import AuditEvent
from connections.models import ByokConnection
from orgs.models import AppInstance
from orgs.staff_roles import ACCOUNT_REPS
from setup.models import RequestEvent, SetupRequest
from setup.services import claim_setup_request
from tests.factories import (
    PASSWORD,
    AppInstanceFactory,
    OrganizationFactory,
    SiteFactory,
    org_admin,
    staff_user,
)
from tests.support import login_staff, login_verified, totp_device

pytestmark = pytest.mark.django_db

EXAMPLES = hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
text = st.text(max_size=120)
short_text = st.text(max_size=30)
ORG_NAME = "Prop Org"


@contextmanager
def rolled_back():
    """One example: its writes are undone afterwards (a savepoint inside the test's transaction)."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def events(org, name: str) -> int:
    return AuditEvent.objects.filter(organization=org, event_name=name).count()


@pytest.fixture
def byok(db):
    org = OrganizationFactory(name=ORG_NAME)
    admin = org_admin(org)
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id="210987654321", location="us", state="active"
    )
    site = SiteFactory(organization=org, name="prop-site")
    apps = [
        AppInstanceFactory(site=site, app=a, encryption="byok", status="active")
        for a in ("jira", "confluence")
    ]
    return {"org": org, "admin": admin, "connection": connection, "apps": apps}


@pytest.fixture
def claimed(db):
    org = OrganizationFactory(name="Prop Staff Org")
    rep = staff_user(ACCOUNT_REPS)
    req = SetupRequest.objects.create(
        organization=org,
        requested_by=org_admin(org),
        aws_account_id="210987654321",
        site_name="prop-staff-site",
        location="us",
        apps=["jira"],
    )
    claim_setup_request(request_id=req.pk, rep=rep)
    return {"org": org, "rep": rep, "request": req}


# --- Customer forms -----------------------------------------------------------------------


@EXAMPLES
@given(
    reason=st.one_of(text, st.just("Security drill")),
    confirm=st.one_of(short_text, st.just(ORG_NAME), st.just(f"  {ORG_NAME} ")),
    password=st.one_of(short_text, st.just(PASSWORD)),
)
def test_revoke_form_revokes_wholly_or_not_at_all(client, byok, reason, confirm, password):
    login_verified(client, byok["admin"])
    org, connection = byok["org"], byok["connection"]
    with rolled_back():
        response = client.post(
            f"/orgs/{org.pk}/byok/revoke/",
            {"reason": reason, "confirm_name": confirm, "password": password},
        )
        assert response.status_code in (200, 302)
        connection.refresh_from_db()
        statuses = set(
            AppInstance.objects.filter(site__organization=org).values_list("status", flat=True)
        )
        if connection.state == "revoked":
            assert response.status_code == 302
            assert statuses == {"suspended"}
            assert events(org, "RevokeKeyAccess") == 1
            assert connection.revoked_at and connection.restore_deadline
        else:
            assert connection.state == "active"
            assert statuses == {"active"}
            assert events(org, "RevokeKeyAccess") == 0


@EXAMPLES
@given(confirm=st.one_of(short_text, st.sampled_from(["on", "true", "1", "off", ""])))
def test_restore_form_requests_a_restore_wholly_or_not_at_all(client, byok, confirm):
    org, connection = byok["org"], byok["connection"]
    ByokConnection.objects.filter(pk=connection.pk).update(state="revoked")
    login_verified(client, byok["admin"])
    with rolled_back():
        response = client.post(f"/orgs/{org.pk}/byok/restore/", {"confirm": confirm})
        assert response.status_code in (200, 302)
        connection.refresh_from_db()
        if connection.state == "restoring":
            assert events(org, "RequestRestoreKeyAccess") == 1
        else:
            assert connection.state == "revoked"
            assert events(org, "RequestRestoreKeyAccess") == 0


FILTER_FIELDS = [
    "from",
    "to",
    "event_name",
    "event_source",
    "principal",
    "resource",
    "region",
    "errors_only",
    "request_id",
    "format",
    "after",
    "before",
]


@EXAMPLES
@given(
    params=st.dictionaries(
        st.sampled_from(FILTER_FIELDS),
        st.one_of(
            text,
            st.sampled_from(["csv", "json", "2025-05-01T10:00", "us-east-1", "on", "Decrypt"]),
        ),
        max_size=6,
    )
)
def test_audit_filters_from_the_url_never_fail(client, byok, params):
    login_verified(client, byok["admin"])
    with rolled_back():
        response = client.get(f"/orgs/{byok['org'].pk}/audit/", params)
        assert response.status_code in (200, 400)
        if getattr(response, "streaming", False):
            b"".join(response.streaming_content)  # the export streams without failing


# --- Staff forms ------------------------------------------------------------------------


@EXAMPLES
@given(reason=st.one_of(text, st.just("Wrong account."), st.text(min_size=2001, max_size=2100)))
def test_staff_reject_rejects_wholly_or_not_at_all(client, claimed, reason):
    login_staff(client, claimed["rep"])
    req = claimed["request"]
    with rolled_back():
        response = client.post(f"/staff/requests/{req.pk}/reject/", {"reason": reason})
        assert response.status_code == 302
        req.refresh_from_db()
        if req.status == "rejected":
            assert req.rejection_reason and req.rejection_reason in reason
            assert req.closed_at is not None
            assert events(claimed["org"], "RejectByokSetupRequest") == 1
        else:
            assert req.status == "claimed" and req.rejection_reason == ""
            assert events(claimed["org"], "RejectByokSetupRequest") == 0


@EXAMPLES
@given(note=st.one_of(text, st.text(min_size=4001, max_size=4100)))
def test_staff_note_is_added_wholly_or_not_at_all(client, claimed, note):
    login_staff(client, claimed["rep"])
    req = claimed["request"]
    with rolled_back():
        response = client.post(f"/staff/requests/{req.pk}/note/", {"note": note})
        assert response.status_code == 302
        notes = RequestEvent.objects.filter(request=req, kind="note")
        assert notes.count() == events(claimed["org"], "AddInternalNote") <= 1


@EXAMPLES
@given(
    params=st.dictionaries(
        st.sampled_from(["status", "location", "age", "page"]),
        st.one_of(short_text, st.sampled_from(["all", "claimed", "us", "eu", "1", "7"])),
        max_size=4,
    )
)
def test_staff_queue_filters_never_fail(client, claimed, params):
    login_staff(client, claimed["rep"])
    assert client.get("/staff/requests/", params).status_code == 200


# --- Sign-in forms ----------------------------------------------------------------------


@EXAMPLES
@given(
    username=st.one_of(short_text, st.just("prop-user@example.com")),
    password=st.one_of(short_text, st.just(PASSWORD)),
)
def test_login_never_fails_and_signs_in_only_the_right_pair(client, db, username, password):
    with rolled_back():
        user = org_admin(user__email="prop-user@example.com")
        client.cookies.clear()
        response = client.post("/accounts/login/", {"username": username, "password": password})
        assert response.status_code in (200, 302, 429)
        signed_in = client.session.get("_auth_user_id")
        right = username.strip().lower() == user.email and password == PASSWORD
        assert (response.status_code == 302) == bool(signed_in) == right


@EXAMPLES
@given(
    old=st.one_of(short_text, st.just(PASSWORD)),
    new1=st.one_of(short_text, st.just("a-much-Longer-passphrase-42")),
    new2=st.one_of(short_text, st.just("a-much-Longer-passphrase-42")),
)
def test_password_change_changes_it_wholly_or_not_at_all(client, db, old, new1, new2):
    with rolled_back():
        user = org_admin()
        client.force_login(user)
        response = client.post(
            "/accounts/password/",
            {"old_password": old, "new_password1": new1, "new_password2": new2},
        )
        assert response.status_code in (200, 302)
        user.refresh_from_db()
        if response.status_code == 302:
            assert user.check_password(new1) and not user.check_password(PASSWORD)
        else:
            assert user.check_password(PASSWORD)


@EXAMPLES
@given(code=st.one_of(short_text, st.from_regex(r"\A[0-9 -]{0,12}\Z")))
def test_two_factor_code_never_fails_and_verifies_only_a_right_code(client, db, code):
    with rolled_back():
        rep = staff_user(ACCOUNT_REPS)
        totp_device(rep)
        client.force_login(rep)
        response = client.post("/accounts/2fa/verify/", {"code": code, "next": "/staff/"})
        assert response.status_code in (200, 302)
        verified = DEVICE_ID_SESSION_KEY in client.session
        assert verified == (response.status_code == 302)


@EXAMPLES
@given(password=st.one_of(short_text, st.just(PASSWORD)), code=short_text)
def test_reauthentication_never_fails(client, db, password, code):
    with rolled_back():
        user = org_admin()
        totp_device(user)
        login_verified(client, user)
        response = client.post(
            "/accounts/reauthenticate/", {"password": password, "code": code, "next": "/"}
        )
        assert response.status_code in (200, 302, 429)
