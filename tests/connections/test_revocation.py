"""Revoke, restore, expiry and the health monitor: every transition and every refusal."""

from datetime import timedelta

import botocore.exceptions
import pytest
from django.core import mail
from django.utils import timezone
from freezegun import freeze_time

from audit.models import AuditEvent
from connections import lifecycle
from connections import services as revocation
from connections.lifecycle import TransitionNotAllowed, transition
from connections.models import (
    ByokConnection,
    ConnectionState,
    DataKey,
    DataKeyWrapping,
    RegionalKey,
)
from orgs.models import AppInstance
from tests.customer_aws import CUSTOMER_ACCOUNT
from tests.factories import AppInstanceFactory, OrganizationFactory, SiteFactory, org_admin

pytestmark = pytest.mark.django_db
S = ConnectionState
ALL_STATES = [s.value for s in S]


# The lifecycle as the product promises it, written out here (not read from the code):
# pending → active → revoked → (restoring → active) | expired; active → re-encrypting → active;
# active ↔ degraded. A verified restore ends active (the re-encryption receiver then moves on to
# re-encrypting when a job was paused).
EXPECTED_EDGES = {
    ("pending", "active"),
    ("active", "degraded"),
    ("degraded", "active"),
    ("active", "revoked"),
    ("degraded", "revoked"),
    ("re-encrypting", "revoked"),
    ("active", "re-encrypting"),
    ("re-encrypting", "active"),
    ("revoked", "restoring"),
    ("revoked", "expired"),
    ("restoring", "active"),
    ("restoring", "revoked"),
    ("restoring", "expired"),
}


@pytest.mark.parametrize("current", ALL_STATES)
@pytest.mark.parametrize("target", ALL_STATES)
def test_state_machine_allows_exactly_the_promised_transitions(current, target):
    org = OrganizationFactory()
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=CUSTOMER_ACCOUNT, location="us", state=current
    )
    if (current, target) in EXPECTED_EDGES:
        transition(connection, target)
        connection.refresh_from_db()
        assert connection.state == target
    else:
        with pytest.raises(TransitionNotAllowed):
            transition(connection, target)
        connection.refresh_from_db()
        assert connection.state == current


def test_the_named_state_sets_match_the_promises():
    assert lifecycle.USABLE_STATES == {"active", "degraded", "re-encrypting"}
    assert lifecycle.REVOCABLE_STATES == {"active", "degraded", "re-encrypting"}
    assert lifecycle.RESTORABLE_STATES == {"revoked"}
    assert lifecycle.MONITORED_STATES == {"active", "degraded", "re-encrypting", "revoked"}
    # Every timed state has a deadline and a way out.
    assert set(lifecycle.DEADLINES) == {"revoked", "restoring"}
    assert lifecycle.DEADLINES["revoked"].then == "expired"
    assert lifecycle.DEADLINES["restoring"].then == "revoked"
    # Revoke and restore need the same step-up from an org admin; machines need none.
    revoke = lifecycle.step_up_for("active", "revoked", lifecycle.Actor.ORG_ADMIN)
    restore = lifecycle.step_up_for("revoked", "restoring", lifecycle.Actor.ORG_ADMIN)
    assert revoke == restore == lifecycle.StepUp.DESTRUCTIVE
    assert lifecycle.step_up_for("active", "revoked", lifecycle.Actor.MONITOR) == "none"
    assert lifecycle.step_up_for("revoked", "expired", lifecycle.Actor.ORG_ADMIN) is None


@pytest.fixture
def byok_org(customer_aws):
    """An org with an active connection to real (moto) keys and two BYOK apps."""
    org = OrganizationFactory(name="Acme Test")
    admin = org_admin(org)
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=CUSTOMER_ACCOUNT, location="us", state=S.ACTIVE
    )
    arns = customer_aws.set_up(["us-east-1", "us-west-2"], external_id=connection.external_id)
    for region, arn in arns.items():
        RegionalKey.objects.create(
            connection=connection, region=region, key_arn=arn, status="enabled"
        )
    site = SiteFactory(organization=org, name="acme-test")
    apps = [
        AppInstanceFactory(site=site, app=app, encryption="byok", status="active")
        for app in ("jira", "confluence")
    ]
    return {"org": org, "admin": admin, "connection": connection, "arns": arns, "apps": apps}


def _store(app, text=b"secret issue"):
    from dataplane.records import store_record

    return store_record(app_instance=app, kind="issue", plaintext=text)


def _read(app, record):
    from dataplane.records import read_record

    return read_record(app_instance=app, record_id=record.pk)


def test_revoke_suspends_apps_refuses_reads_and_notifies(
    byok_org, django_capture_on_commit_callbacks, settings
):
    from dataplane.records import AppSuspended

    app = byok_org["apps"][0]
    record = _store(app)
    assert _read(app, record) == b"secret issue"
    with django_capture_on_commit_callbacks(execute=True):
        revocation.revoke_key_access(
            org=byok_org["org"], actor=byok_org["admin"], reason="Audit drill"
        )
    connection = ByokConnection.objects.get(pk=byok_org["connection"].pk)
    assert connection.state == S.REVOKED
    assert connection.restore_deadline - connection.revoked_at == timedelta(
        days=settings.BYOK_RESTORE_WINDOW_DAYS
    )
    assert set(AppInstance.objects.filter(encryption="byok").values_list("status", flat=True)) == {
        "suspended"
    }
    with pytest.raises(AppSuspended) as refused:
        _read(app, record)
    assert "revoked" in refused.value.reason.lower()
    assert byok_org["admin"].email in {r for m in mail.outbox for r in m.to}
    event = AuditEvent.objects.get(event_name="RevokeKeyAccess")
    assert event.principal == byok_org["admin"].email


def test_revoke_is_refused_when_nothing_is_active(byok_org):
    revocation.revoke_key_access(org=byok_org["org"], actor=byok_org["admin"], reason="x")
    with pytest.raises(TransitionNotAllowed, match="nothing to revoke"):
        revocation.revoke_key_access(org=byok_org["org"], actor=byok_org["admin"], reason="again")


def test_restore_after_reenabling_brings_apps_and_data_back(
    byok_org, customer_aws, django_capture_on_commit_callbacks
):
    app = byok_org["apps"][0]
    record = _store(app)
    revocation.revoke_key_access(org=byok_org["org"], actor=byok_org["admin"], reason="drill")
    with django_capture_on_commit_callbacks(execute=True):
        revocation.request_restore(org=byok_org["org"], actor=byok_org["admin"])
    connection = ByokConnection.objects.get(pk=byok_org["connection"].pk)
    assert connection.state == S.ACTIVE, connection.restore_checks
    assert all(c["passed"] for c in connection.restore_checks)
    assert any("data keys unwrap" in c["detail"] for c in connection.restore_checks)
    assert AppInstance.objects.get(pk=app.pk).status == "active"
    assert _read(app, record) == b"secret issue"


def test_restore_with_a_key_still_disabled_goes_back_to_revoked_naming_the_check(
    byok_org, customer_aws, django_capture_on_commit_callbacks
):
    revocation.revoke_key_access(org=byok_org["org"], actor=byok_org["admin"], reason="drill")
    customer_aws.disable_key("us-west-2", byok_org["arns"]["us-west-2"])
    with django_capture_on_commit_callbacks(execute=True):
        revocation.request_restore(org=byok_org["org"], actor=byok_org["admin"])
    connection = ByokConnection.objects.get(pk=byok_org["connection"].pk)
    assert connection.state == S.REVOKED
    assert "us-west-2" in connection.state_reason
    failing = [c for c in connection.restore_checks if not c["passed"]]
    assert failing and failing[0]["region"] == "us-west-2"
    assert AppInstance.objects.get(pk=byok_org["apps"][0].pk).status == "suspended"


def test_restore_is_refused_while_active(byok_org):
    with pytest.raises(TransitionNotAllowed):
        revocation.request_restore(org=byok_org["org"], actor=byok_org["admin"])


def test_after_the_deadline_restore_is_refused_and_data_keys_are_destroyed(
    byok_org, django_capture_on_commit_callbacks, settings
):
    days = settings.BYOK_RESTORE_WINDOW_DAYS
    app = byok_org["apps"][0]
    _store(app)
    assert DataKeyWrapping.objects.exists()
    revocation.revoke_key_access(org=byok_org["org"], actor=byok_org["admin"], reason="drill")
    with freeze_time(timezone.now() + timedelta(days=days, minutes=1)):
        with django_capture_on_commit_callbacks(execute=True):
            with pytest.raises(TransitionNotAllowed, match=f"within {days} days"):
                revocation.request_restore(org=byok_org["org"], actor=byok_org["admin"])
    connection = ByokConnection.objects.get(pk=byok_org["connection"].pk)
    assert connection.state == S.EXPIRED
    assert not DataKeyWrapping.objects.exists()
    assert not DataKey.objects.filter(destroyed_at=None).exists()
    assert AuditEvent.objects.filter(event_name="DestroyDataKeys").exists()


def test_monitor_revokes_when_the_customer_disables_a_key(byok_org, customer_aws):
    customer_aws.disable_key("us-east-1", byok_org["arns"]["us-east-1"])
    assert revocation.check_connection_health(connection_id=byok_org["connection"].pk) == S.REVOKED
    connection = ByokConnection.objects.get(pk=byok_org["connection"].pk)
    assert connection.state == S.REVOKED
    assert "us-east-1" in connection.state_reason and "disabled" in connection.state_reason.lower()
    assert RegionalKey.objects.get(region="us-east-1").status == "disabled"
    assert AuditEvent.objects.filter(event_name="KeyAccessLost").exists()
    # The revoke page's ticks now show the key step as done.
    assert connection.customer_side["us-east-1"]["key_disabled"] is True


def test_the_beat_task_checks_each_connection_in_its_own_task(byok_org, customer_aws):
    """The beat's sweep queues one check per monitored connection (eager here: they run at
    once) rather than holding one pool process for every org's KMS calls in a row."""
    from connections.tasks import run_health_monitor

    customer_aws.disable_key("us-east-1", byok_org["arns"]["us-east-1"])
    assert run_health_monitor.delay().get() == {"checks_queued": 1}
    connection = ByokConnection.objects.get(pk=byok_org["connection"].pk)
    assert connection.state == S.REVOKED
    assert connection.last_checked_at is not None


def test_a_check_of_a_connection_deleted_meanwhile_is_a_no_op():
    from connections.tasks import check_connection_health_task

    assert check_connection_health_task.delay(987654).get() == "gone"


def test_monitor_revokes_on_pending_deletion(byok_org, customer_aws):
    customer_aws.schedule_deletion("us-west-2", byok_org["arns"]["us-west-2"])
    assert revocation.check_connection_health(connection_id=byok_org["connection"].pk) == S.REVOKED
    assert RegionalKey.objects.get(region="us-west-2").status == "pending-deletion"


def test_monitor_revokes_when_the_trust_policy_denies_us(byok_org, inject_aws_error):
    inject_aws_error("sts.AssumeRole", code="AccessDenied", status=403, message="not authorized")
    assert revocation.check_connection_health(connection_id=byok_org["connection"].pk) == S.REVOKED
    connection = ByokConnection.objects.get(pk=byok_org["connection"].pk)
    assert all(v["trust_denied"] for v in connection.customer_side.values())


def test_a_single_transient_error_never_flaps_and_never_revokes(
    byok_org, inject_aws_error, settings
):
    settings.HEALTH_DEGRADED_AFTER = 2
    injection = inject_aws_error("kms.DescribeKey", code="ThrottlingException", status=400)
    connection_id = byok_org["connection"].pk
    assert revocation.check_connection_health(connection_id=connection_id) == S.ACTIVE
    assert injection.calls >= settings.AWS_MAX_ATTEMPTS  # botocore really retried
    assert revocation.check_connection_health(connection_id=connection_id) == S.DEGRADED
    assert AppInstance.objects.get(pk=byok_org["apps"][0].pk).status == "active"


def test_degraded_returns_to_active_when_aws_answers_again(byok_org, aws_hooks, no_retry_delay):
    connection_id = byok_org["connection"].pk
    failing = {"on": True}

    def timeout(request, **kwargs):
        if failing["on"]:
            raise botocore.exceptions.ConnectTimeoutError(endpoint_url=request.url)

    aws_hooks.append(("before-send.kms.DescribeKey", timeout))
    revocation.check_connection_health(connection_id=connection_id)
    assert revocation.check_connection_health(connection_id=connection_id) == S.DEGRADED
    failing["on"] = False
    assert revocation.check_connection_health(connection_id=connection_id) == S.ACTIVE
    assert AuditEvent.objects.filter(event_name="KeyAccessHealthy").exists()


def test_a_disabled_exception_in_the_data_plane_revokes_at_once(byok_org, inject_aws_error):
    from dataplane import dek_cache
    from dataplane.records import AppSuspended

    app = byok_org["apps"][0]
    record = _store(app)
    dek_cache.purge_all()
    inject_aws_error("kms.Decrypt", code="DisabledException", message="key is disabled")
    with pytest.raises(AppSuspended):
        _read(app, record)
    assert ByokConnection.objects.get(pk=byok_org["connection"].pk).state == S.REVOKED


def test_revoke_page_demands_the_typed_name_and_the_password(client, byok_org):
    from tests.support import login_verified

    org = byok_org["org"]
    login_verified(client, byok_org["admin"])
    url = f"/orgs/{org.pk}/byok/revoke/"
    page = client.get(url).content.decode()
    assert "Every BYOK app of" in page
    wrong = client.post(url, {"reason": "x", "confirm_name": "acme test", "password": "nope"})
    body = wrong.content.decode()
    assert "Type Acme Test exactly" in body and "That is not your password" in body
    assert ByokConnection.objects.get(pk=byok_org["connection"].pk).state == S.ACTIVE
    from tests.factories import PASSWORD

    ok = client.post(url, {"reason": "drill", "confirm_name": "Acme Test", "password": PASSWORD})
    assert ok.status_code == 302
    assert ByokConnection.objects.get(pk=byok_org["connection"].pk).state == S.REVOKED


def test_members_cannot_revoke_or_restore(client, byok_org):
    from tests.factories import org_member

    org = byok_org["org"]
    client.force_login(org_member(org))
    assert client.post(f"/orgs/{org.pk}/byok/revoke/", {"reason": "x"}).status_code == 403
    assert client.post(f"/orgs/{org.pk}/byok/restore/", {"confirm": "on"}).status_code == 403
    assert client.get(f"/orgs/{org.pk}/byok/restore/?fragment=1").status_code == 403
    assert ByokConnection.objects.get(pk=byok_org["connection"].pk).state == S.ACTIVE


# --- Restore needs the same step-up as revoke ----------------------------------------------


def test_restore_page_demands_two_factor_a_recent_sign_in_the_name_and_the_password(
    client, byok_org
):
    from tests.factories import PASSWORD
    from tests.support import login_verified, make_auth_stale

    org, connection = byok_org["org"], byok_org["connection"]
    url = f"/orgs/{org.pk}/byok/restore/"
    revocation.revoke_key_access(org=org, actor=byok_org["admin"], reason="drill")

    # Signed in with a password only: sent to two-factor set-up, as for revoke.
    client.force_login(byok_org["admin"])
    for path in (url, f"/orgs/{org.pk}/byok/revoke/"):
        response = client.get(path)
        assert response.status_code == 302 and "/accounts/2fa/" in response["Location"]
    assert "/accounts/2fa/" in client.post(url, {"confirm": "on"})["Location"]

    # Two-factor but an old sign-in: confirm it is you first.
    login_verified(client, byok_org["admin"])
    make_auth_stale(client, 3600)
    assert "reauthenticate" in client.get(url)["Location"]

    login_verified(client, byok_org["admin"])
    body = client.get(url).content.decode()
    assert "Type the organization" in body and "Your password" in body
    wrong = client.post(url, {"confirm": "on", "confirm_name": "acme", "password": "nope"})
    body = wrong.content.decode()
    assert "Type Acme Test exactly" in body and "That is not your password" in body
    connection.refresh_from_db()
    assert connection.state == S.REVOKED
    ok = client.post(url, {"confirm": "on", "confirm_name": "Acme Test", "password": PASSWORD})
    assert ok.status_code == 302
    connection.refresh_from_db()
    assert connection.state in (S.RESTORING, S.ACTIVE)
    assert AuditEvent.objects.filter(event_name="RequestRestoreKeyAccess").count() == 1


# --- No state without a way out ------------------------------------------------------------


def test_restoring_whose_check_was_lost_falls_back_to_revoked_by_its_deadline(
    byok_org, django_capture_on_commit_callbacks, settings
):
    settings.BYOK_RESTORE_CHECK_TIMEOUT_S = 600
    org = byok_org["org"]
    revocation.revoke_key_access(org=org, actor=byok_org["admin"], reason="drill")
    start = timezone.now()
    with freeze_time(start):
        # The check task is lost: on-commit callbacks (the enqueue) never run.
        with django_capture_on_commit_callbacks(execute=False):
            revocation.request_restore(org=org, actor=byok_org["admin"])
    connection = ByokConnection.objects.get(pk=byok_org["connection"].pk)
    assert connection.state == S.RESTORING

    # Before the deadline the monitor leaves it alone, however often it runs.
    with freeze_time(start + timedelta(minutes=9)):
        for _ in range(3):
            revocation.enforce_deadlines()
    assert ByokConnection.objects.get(pk=connection.pk).state == S.RESTORING

    mail.outbox.clear()
    with freeze_time(start + timedelta(minutes=10, seconds=1)):
        with django_capture_on_commit_callbacks(execute=True):
            revocation.run_health_monitor()
    connection.refresh_from_db()
    assert connection.state == S.REVOKED
    assert "did not finish within 10 minutes" in connection.state_reason
    assert AuditEvent.objects.filter(event_name="RestoreCheckTimedOut").count() == 1
    assert any("restore check timed out" in m.subject for m in mail.outbox)
    # The restore window still runs from the revocation: the admin can ask again.
    assert connection.restore_deadline > timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        revocation.request_restore(org=org, actor=byok_org["admin"])
    assert ByokConnection.objects.get(pk=connection.pk).state == S.ACTIVE


def test_restoring_past_the_restore_window_ends_expired(byok_org, settings):
    org = byok_org["org"]
    revocation.revoke_key_access(org=org, actor=byok_org["admin"], reason="drill")
    revocation.request_restore(org=org, actor=byok_org["admin"])  # eager task not run: no commit
    assert ByokConnection.objects.get(pk=byok_org["connection"].pk).state == S.RESTORING
    later = timezone.now() + timedelta(days=settings.BYOK_RESTORE_WINDOW_DAYS, minutes=1)
    with freeze_time(later):
        revocation.run_health_monitor()
    assert ByokConnection.objects.get(pk=byok_org["connection"].pk).state == S.EXPIRED


# --- Notices of the restore window ---------------------------------------------------------


def _subjects(org_admin_email):
    return [m.subject for m in mail.outbox if org_admin_email in m.to]


def test_reminders_7_days_and_1_day_before_the_window_ends_are_sent_once_each(
    byok_org, django_capture_on_commit_callbacks, settings
):
    settings.BYOK_RESTORE_WINDOW_DAYS = 15
    org, admin = byok_org["org"], byok_org["admin"]
    second_admin = org_admin(org)
    start = timezone.now()
    with freeze_time(start), django_capture_on_commit_callbacks(execute=True):
        revocation.revoke_key_access(org=org, actor=admin, reason="drill")
    assert len([s for s in _subjects(second_admin.email) if "revoked" in s]) == 1

    def monitor_many_times(at):
        with freeze_time(at):
            for _ in range(5):
                with django_capture_on_commit_callbacks(execute=True):
                    revocation.run_health_monitor()

    monitor_many_times(start + timedelta(days=1))
    assert not [s for s in _subjects(admin.email) if "reminder" in s]
    monitor_many_times(start + timedelta(days=8, minutes=1))  # 7 days before the end
    monitor_many_times(start + timedelta(days=10))
    monitor_many_times(start + timedelta(days=14, minutes=1))  # 1 day before the end
    monitor_many_times(start + timedelta(days=14, hours=12))
    for email in (admin.email, second_admin.email):
        reminders = [s for s in _subjects(email) if "reminder" in s]
        assert len(reminders) == 2, reminders
        assert "6 days" in reminders[0] and "23 hours" in reminders[1]
    assert AuditEvent.objects.filter(event_name="RestoreWindowReminder").count() == 2
    notices = ByokConnection.objects.get(pk=byok_org["connection"].pk).notices_sent
    assert set(notices) == {"revoked", "7-days", "1-day"}

    monitor_many_times(start + timedelta(days=15, minutes=1))
    expired = [s for s in _subjects(admin.email) if "restore window ended" in s]
    assert len(expired) == 1
    assert ByokConnection.objects.get(pk=byok_org["connection"].pk).state == S.EXPIRED


def test_a_revocation_found_by_the_monitor_starts_the_window_and_its_notices(
    byok_org, customer_aws, django_capture_on_commit_callbacks, settings
):
    customer_aws.disable_key("us-east-1", byok_org["arns"]["us-east-1"])
    with django_capture_on_commit_callbacks(execute=True):
        revocation.run_health_monitor()
    connection = ByokConnection.objects.get(pk=byok_org["connection"].pk)
    assert connection.state == S.REVOKED
    assert connection.restore_deadline - connection.revoked_at == timedelta(
        days=settings.BYOK_RESTORE_WINDOW_DAYS
    )
    assert set(connection.notices_sent) == {"revoked"}
    body = next(m.body for m in mail.outbox if byok_org["admin"].email in m.to)
    assert f"within {settings.BYOK_RESTORE_WINDOW_DAYS} days" in body


def test_banner_and_countdown_show_only_to_admins_of_a_revoked_org(client, byok_org):
    from tests.factories import org_member
    from tests.support import login_verified

    org = byok_org["org"]
    other_org = OrganizationFactory(name="Other Org")
    login_verified(client, byok_org["admin"])
    assert 'data-banner="byok-revoked"' not in client.get("/").content.decode()
    revocation.revoke_key_access(org=org, actor=byok_org["admin"], reason="drill")
    page = client.get("/").content.decode()
    assert 'data-banner="byok-revoked"' in page and "Acme Test" in page
    status = client.get(f"/orgs/{org.pk}/byok/").content.decode()
    assert 'data-countdown="restore-window"' in status and "left of the" in status

    client.force_login(org_member(org))
    assert 'data-banner="byok-revoked"' not in client.get("/").content.decode()
    client.force_login(org_admin(other_org))
    assert 'data-banner="byok-revoked"' not in client.get("/").content.decode()


def test_revoke_page_shows_the_iam_deny_step_once_and_the_key_step_per_region(client, byok_org):
    from tests.support import login_verified

    org = byok_org["org"]
    revocation.revoke_key_access(org=org, actor=byok_org["admin"], reason="drill")
    login_verified(client, byok_org["admin"])
    page = client.get(f"/orgs/{org.pk}/byok/revoke/").content.decode()
    assert page.count('"Effect": "Deny"') == 1
    assert page.count('data-step="trust-policy"') == 1
    for region, arn in byok_org["arns"].items():
        assert f"aws kms disable-key --region {region} --key-id {arn}" in page
