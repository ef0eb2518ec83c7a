"""Scoped revocation: the state table, the customer-side Deny seen by the health monitor, the
pages (step-up, validation), restore, the restore window, audit, notices and the admin."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from connections import scope_lifecycle
from connections import services as revocation
from connections.lifecycle import TransitionNotAllowed
from connections.models import ByokConnection, DataKey, ScopedRevocation
from connections.services import Scope
from core.errors import NotFound
from dataplane import dek_cache
from tests.connections import test_revocation as base
from tests.customer_aws import deny_encryption_context
from tests.factories import PASSWORD, OrganizationFactory, SiteFactory, org_admin
from tests.support import login_verified

pytestmark = pytest.mark.django_db
byok_org = base.byok_org

# The scope's lifecycle as promised (not read from the code).
EXPECTED_EDGES = {
    ("revoked", "restoring"),
    ("restoring", "restored"),
    ("restoring", "revoked"),
    ("revoked", "expired"),
    ("restoring", "expired"),
}


@pytest.fixture(autouse=True)
def cold_process():
    dek_cache.purge_all()
    yield
    dek_cache.purge_all()


def test_scope_state_machine_allows_exactly_the_promised_transitions():
    edges = {(e.source, e.target) for e in scope_lifecycle.EDGES}
    assert edges == EXPECTED_EDGES
    assert scope_lifecycle.BLOCKING_STATES == {"revoked", "restoring", "expired"}
    restore = next(e for e in scope_lifecycle.EDGES if e.target == "restoring")
    assert (
        restore.step_up
        == scope_lifecycle.REVOKE_STEP_UP
        == "totp + recent sign-in + password + typed org name"
    )


def _app(byok_org, name):
    return next(a for a in byok_org["apps"] if a.app == name)


def test_revoking_an_app_is_audited_with_its_scope_and_mailed_to_the_admins(
    byok_org, django_capture_on_commit_callbacks
):
    jira = _app(byok_org, "jira")
    with django_capture_on_commit_callbacks(execute=True):
        revocation.revoke_scope(
            org=byok_org["org"], actor=byok_org["admin"], scope=Scope.app(jira.pk), reason="leak"
        )

    event = AuditEvent.objects.get(event_name="RevokeScopedKeyAccess")
    assert event.record["requestParameters"]["scope"] == {
        "kind": "app",
        "site": "acme-test",
        "app": "jira",
        "appInstanceId": jira.pk,
    }
    assert [m.to for m in mail.outbox] == [[byok_org["admin"].email]]
    assert "Jira on acme-test" in mail.outbox[0].subject
    assert ByokConnection.objects.get(pk=byok_org["connection"].pk).state == "active"


def test_the_same_app_cannot_be_revoked_twice(byok_org):
    jira = _app(byok_org, "jira")
    kwargs = {"org": byok_org["org"], "actor": byok_org["admin"], "scope": Scope.app(jira.pk)}
    revocation.revoke_scope(reason="one", **kwargs)
    with pytest.raises(TransitionNotAllowed, match="already revoked"):
        revocation.revoke_scope(reason="two", **kwargs)


def test_another_orgs_site_is_not_found(byok_org):
    other_site = SiteFactory(organization=OrganizationFactory())
    with pytest.raises(NotFound):
        revocation.revoke_scope(
            org=byok_org["org"],
            actor=byok_org["admin"],
            scope=Scope.site(other_site.pk),
            reason="x",
        )


def test_a_period_without_data_is_refused_with_a_clear_message(byok_org):
    now = timezone.now()
    with pytest.raises(revocation.InvalidScope, match="nothing to revoke"):
        revocation.revoke_scope(
            org=byok_org["org"],
            actor=byok_org["admin"],
            scope=Scope.period(now - timedelta(days=2), now - timedelta(days=1)),
            reason="x",
        )


# --- Customer-side revocation: a Deny on one app's encryption context ------------------------


def test_monitor_suspends_exactly_the_app_whose_context_aws_denies(
    byok_org, aws_hooks, django_capture_on_commit_callbacks
):
    jira, confluence = _app(byok_org, "jira"), _app(byok_org, "confluence")
    record = base._store(confluence)
    refused = deny_encryption_context(aws_hooks, site="acme-test", app="jira")

    with django_capture_on_commit_callbacks(execute=True):
        revocation.check_connection_health(connection_id=byok_org["connection"].pk)

    assert refused  # the probe carried jira's context, and AWS (the hook) denied it
    scope = ScopedRevocation.objects.get()
    assert (scope.kind, scope.app_instance_id, scope.source) == ("app", jira.pk, "customer-aws")
    assert "Customer-side revocation" in scope.reason
    assert ByokConnection.objects.get(pk=byok_org["connection"].pk).state == "active"
    assert base._read(confluence, record) == b"secret issue"
    # A second run changes nothing (already revoked; never restored by the monitor).
    revocation.check_connection_health(connection_id=byok_org["connection"].pk)
    assert ScopedRevocation.objects.count() == 1


def test_monitor_suspends_the_site_when_every_app_of_it_is_denied(byok_org, aws_hooks):
    deny_encryption_context(aws_hooks, site="acme-test")

    revocation.check_connection_health(connection_id=byok_org["connection"].pk)

    scope = ScopedRevocation.objects.get()
    assert (scope.kind, scope.site.name) == ("site", "acme-test")


def test_restore_fails_while_the_deny_is_still_in_the_key_policy(byok_org, aws_hooks):
    jira = _app(byok_org, "jira")
    deny_encryption_context(aws_hooks, app="jira")
    revocation.check_connection_health(connection_id=byok_org["connection"].pk)
    scope = ScopedRevocation.objects.get()

    revocation.restore_scope(org=byok_org["org"], actor=byok_org["admin"], revocation_id=scope.pk)
    revocation.verify_scope_restore(revocation_id=scope.pk)

    scope.refresh_from_db()
    assert scope.state == "revoked"
    assert "Restore failed" in scope.state_reason
    aws_hooks.clear()
    revocation.restore_scope(org=byok_org["org"], actor=byok_org["admin"], revocation_id=scope.pk)
    revocation.verify_scope_restore(revocation_id=scope.pk)
    scope.refresh_from_db()
    assert scope.state == "restored"
    assert base._read(jira, base._store(jira)) == b"secret issue"


# --- The restore window ---------------------------------------------------------------------


def test_a_scope_past_its_window_expires_and_its_data_keys_are_destroyed(byok_org):
    jira, confluence = _app(byok_org, "jira"), _app(byok_org, "confluence")
    base._store(jira), base._store(confluence)
    scope = revocation.revoke_scope(
        org=byok_org["org"], actor=byok_org["admin"], scope=Scope.app(jira.pk), reason="x"
    )

    revocation.enforce_scope_deadlines(now=scope.restore_deadline + timedelta(seconds=1))

    scope.refresh_from_db()
    assert scope.state == "expired"
    assert DataKey.objects.get(app_instance=jira).destroyed_at is not None
    assert DataKey.objects.get(app_instance=confluence).destroyed_at is None
    with pytest.raises(TransitionNotAllowed, match="within"):
        revocation.restore_scope(
            org=byok_org["org"], actor=byok_org["admin"], revocation_id=scope.pk
        )


def test_scope_reminders_are_sent_once_each(byok_org, django_capture_on_commit_callbacks):
    jira = _app(byok_org, "jira")
    scope = revocation.revoke_scope(
        org=byok_org["org"], actor=byok_org["admin"], scope=Scope.app(jira.pk), reason="x"
    )
    seven_days_left = scope.restore_deadline - timedelta(days=7) + timedelta(minutes=1)
    with django_capture_on_commit_callbacks(execute=True):
        first = revocation.enforce_scope_deadlines(now=seven_days_left)
        again = revocation.enforce_scope_deadlines(now=seven_days_left)

    assert first["scope_reminders"] == [(scope.pk, "7-days")]
    assert again["scope_reminders"] == []
    assert any("left to restore key access for Jira on acme-test" in m.subject for m in mail.outbox)


# --- Pages ------------------------------------------------------------------------------------


def test_revoking_an_app_from_its_page_needs_the_step_up(client, byok_org):
    jira = _app(byok_org, "jira")
    url = f"/orgs/{byok_org['org'].pk}/byok/apps/{jira.pk}/revoke/"
    client.force_login(byok_org["admin"])
    assert "/accounts/2fa/" in client.get(url)["Location"]  # as for the kill switch

    login_verified(client, byok_org["admin"])
    assert "Your other apps keep working" in client.get(url).content.decode()
    assert not ScopedRevocation.objects.exists()  # a GET changes nothing
    wrong = client.post(url, {"reason": "x", "confirm_name": "acme", "password": "nope"})
    assert "Type Acme Test exactly" in wrong.content.decode()
    ok = client.post(url, {"reason": "drill", "confirm_name": "Acme Test", "password": PASSWORD})

    assert ok.status_code == 302
    assert ScopedRevocation.objects.get().app_instance_id == jira.pk
    page = client.get(f"/orgs/{byok_org['org'].pk}/byok/").content.decode()
    assert "Restore…" in page and "Revoke…" in page  # jira restorable, confluence revocable


def test_the_period_form_explains_the_granularity_and_refuses_bad_periods(client, byok_org):
    org = byok_org["org"]
    url = f"/orgs/{org.pk}/byok/period/revoke/"
    login_verified(client, byok_org["admin"])
    assert "Granularity" in client.get(url).content.decode()
    now = timezone.now()
    fmt = "%Y-%m-%dT%H:%M"
    step_up = {"reason": "x", "confirm_name": "Acme Test", "password": PASSWORD}

    backwards = client.post(
        url,
        {
            "period_from": f"{now:{fmt}}",
            "period_to": f"{now - timedelta(hours=1):{fmt}}",
            **step_up,
        },
    )
    future = client.post(
        url,
        {
            "period_from": f"{now - timedelta(hours=1):{fmt}}",
            "period_to": f"{now + timedelta(days=1):{fmt}}",
            **step_up,
        },
    )
    empty = client.post(
        url,
        {
            "period_from": f"{now - timedelta(days=3):{fmt}}",
            "period_to": f"{now - timedelta(days=2):{fmt}}",
            **step_up,
        },
    )

    assert "The end must come after the start" in backwards.content.decode()
    assert "cannot end in the future" in future.content.decode()
    assert "nothing to revoke" in empty.content.decode()
    assert not ScopedRevocation.objects.exists()


def test_a_period_revoked_from_the_page_shows_its_exact_span(client, byok_org):
    jira = _app(byok_org, "jira")
    base._store(jira)
    org = byok_org["org"]
    login_verified(client, byok_org["admin"])
    now = timezone.now()
    fmt = "%Y-%m-%dT%H:%M"
    response = client.post(
        f"/orgs/{org.pk}/byok/period/revoke/",
        {
            "period_from": f"{now - timedelta(hours=1):{fmt}}",
            "period_to": f"{now:{fmt}}",
            "reason": "laptop lost",
            "confirm_name": "Acme Test",
            "password": PASSWORD,
        },
    )
    assert response.status_code == 302
    scope = ScopedRevocation.objects.get()
    page = client.get(f"/orgs/{org.pk}/byok/").content.decode()
    assert f"{scope.covered_from:%Y-%m-%d %H:%M:%S}" in page


def test_restore_page_of_another_orgs_revocation_is_not_found(client, byok_org):
    other = OrganizationFactory()
    other_admin = org_admin(other)
    jira = _app(byok_org, "jira")
    scope = revocation.revoke_scope(
        org=byok_org["org"], actor=byok_org["admin"], scope=Scope.app(jira.pk), reason="x"
    )
    login_verified(client, other_admin)
    assert client.get(f"/orgs/{other.pk}/byok/scopes/{scope.pk}/restore/").status_code == 404


def test_support_admin_shows_scoped_revocations_read_only(client, byok_org):
    from orgs.staff_roles import SUPPORT_STAFF
    from tests.factories import staff_user
    from tests.support import login_staff

    jira = _app(byok_org, "jira")
    scope = revocation.revoke_scope(
        org=byok_org["org"], actor=byok_org["admin"], scope=Scope.app(jira.pk), reason="x"
    )
    login_staff(client, staff_user(SUPPORT_STAFF))
    listing = client.get("/admin/connections/scopedrevocation/")
    assert listing.status_code == 200 and "Jira on acme-test" in listing.content.decode()
    change = client.post(
        f"/admin/connections/scopedrevocation/{scope.pk}/change/", {"state": "restored"}
    )
    assert change.status_code in (403, 302, 200)
    assert ScopedRevocation.objects.get().state == "revoked"
