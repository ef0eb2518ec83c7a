"""Revoke, restore, expiry and the health monitor: every transition and every refusal."""

from datetime import timedelta

import botocore.exceptions
import pytest
from django.core import mail
from django.utils import timezone
from freezegun import freeze_time

from audit.models import AuditEvent
from connections import services as revocation
from connections.lifecycle import ALLOWED_TRANSITIONS, TransitionNotAllowed, transition
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


@pytest.mark.parametrize("current", ALL_STATES)
@pytest.mark.parametrize("target", ALL_STATES)
def test_state_machine_allows_exactly_its_table(current, target):
    org = OrganizationFactory()
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=CUSTOMER_ACCOUNT, location="us", state=current
    )
    if target in ALLOWED_TRANSITIONS[current]:
        transition(connection, target)
        connection.refresh_from_db()
        assert connection.state == target
    else:
        with pytest.raises(TransitionNotAllowed):
            transition(connection, target)
        connection.refresh_from_db()
        assert connection.state == current


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
    byok_org, django_capture_on_commit_callbacks
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
    assert connection.restore_deadline - connection.revoked_at == timedelta(days=15)
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
    byok_org, django_capture_on_commit_callbacks
):
    app = byok_org["apps"][0]
    _store(app)
    assert DataKeyWrapping.objects.exists()
    revocation.revoke_key_access(org=byok_org["org"], actor=byok_org["admin"], reason="drill")
    with freeze_time(timezone.now() + timedelta(days=15, minutes=1)):
        with django_capture_on_commit_callbacks(execute=True):
            with pytest.raises(TransitionNotAllowed, match="within 15 days"):
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
    assert ByokConnection.objects.get(pk=byok_org["connection"].pk).state == S.ACTIVE
