"""Support staff's Django admin: look-ups, three audited actions, exact permissions, no secrets."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.core import mail
from django.urls import reverse

from audit.models import AuditEvent
from connections.models import ByokConnection, DataKey, DataKeyWrapping, RegionalKey
from dataplane.models import AppRecord
from orgs.models import Organization
from orgs.staff_roles import ACCOUNT_REPS, STAFF_GROUP_PERMISSIONS, SUPPORT_STAFF
from setup.models import PreflightRun, SetupRequest
from tests.factories import (
    AppInstanceFactory,
    OrganizationFactory,
    SiteFactory,
    UserFactory,
    org_admin,
    staff_user,
)
from tests.support import login_staff, totp_device

pytestmark = pytest.mark.django_db

KEY_ARN = "arn:aws:kms:us-east-1:444455556666:key/11111111-2222-3333-4444-555555555555"
WRAPPED = b"\x01\x02WRAPPED-DEK-BYTES-do-not-show\xff" * 4


@pytest.fixture
def world():
    org = OrganizationFactory(name="Acme Admin Test")
    admin_user = org_admin(org)
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id="444455556666", location="us", state="active"
    )
    key = RegionalKey.objects.create(
        connection=connection, region="us-east-1", key_arn=KEY_ARN, status="enabled"
    )
    site = SiteFactory(organization=org, name="acme-admin-test")
    app = AppInstanceFactory(site=site, encryption="byok")
    data_key = DataKey.objects.create(app_instance=app, encryption_context={"org": str(org.pk)})
    DataKeyWrapping.objects.create(
        data_key=data_key, regional_key=key, region="us-east-1", blob=WRAPPED
    )
    request = SetupRequest.objects.create(
        organization=org,
        requested_by=admin_user,
        aws_account_id="444455556666",
        site_name="acme-next",
        location="us",
        apps=["jira"],
    )
    return {
        "org": org,
        "admin": admin_user,
        "connection": connection,
        "key": key,
        "data_key": data_key,
        "request": request,
    }


@pytest.fixture
def support(client):
    return login_staff(client, staff_user(SUPPORT_STAFF))


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def change(obj) -> str:
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])


def run_action(client, model, action: str, ids):
    return client.post(
        changelist(model),
        {"action": action, "_selected_action": [str(i) for i in ids], "index": "0"},
        follow=True,
    )


# --- Look-ups ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", [ByokConnection, RegionalKey, SetupRequest, DataKey, Organization, AuditEvent]
)
def test_support_staff_look_up_every_byok_table(support, world, model):
    assert support.get(changelist(model)).status_code == 200


def test_support_staff_find_a_connection_by_key_arn_site_or_account(support, world):
    for term in (KEY_ARN, "acme-admin-test", "444455556666", "Acme Admin"):
        page = support.get(changelist(ByokConnection), {"q": term}).content.decode()
        assert "Acme Admin Test" in page, term
    assert (
        "Acme Admin Test"
        not in support.get(changelist(ByokConnection), {"q": "nomatch"}).content.decode()
    )


def test_support_staff_find_a_request_by_its_number(support, world):
    other = SetupRequest.objects.create(
        organization=OrganizationFactory(),
        requested_by=world["admin"],
        aws_account_id="111111111111",
        site_name="elsewhere",
        location="eu",
        apps=["jira"],
    )
    page = support.get(changelist(SetupRequest), {"q": f"#{world['request'].pk}"}).content.decode()
    assert "acme-next" in page and other.site_name not in page


def test_connection_list_shows_state_badges_and_is_a_fixed_number_of_queries(
    support, world, django_assert_max_num_queries
):
    page = support.get(changelist(ByokConnection)).content.decode()
    assert 'class="badge badge-active"' in page and "css/admin.css" in page
    for n in range(5):
        ByokConnection.objects.create(
            organization=OrganizationFactory(), aws_account_id=f"12345678901{n}", location="eu"
        )
    with django_assert_max_num_queries(14):
        assert support.get(changelist(ByokConnection)).status_code == 200


# --- Read-only and no secrets -----------------------------------------------------------


@pytest.mark.parametrize("model_key", ["connection", "request", "key", "data_key"])
def test_nobody_edits_or_deletes_audited_objects_in_the_admin(client, world, model_key):
    root = UserFactory(is_staff=True, is_superuser=True)
    login_staff(client, root)
    obj = world[model_key]
    meta = obj._meta
    page = client.get(change(obj)).content.decode()
    assert 'name="_save"' not in page
    assert client.post(change(obj), {}).status_code == 403
    delete = reverse(f"admin:{meta.app_label}_{meta.model_name}_delete", args=[obj.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()


def test_no_key_material_or_ciphertext_in_the_admin(support, world):
    assert AppRecord not in admin.site._registry
    assert DataKeyWrapping not in admin.site._registry
    page = support.get(change(world["data_key"])).content.decode()
    assert f"{len(WRAPPED)} bytes" in page
    assert "WRAPPED-DEK" not in page and WRAPPED.hex()[:16] not in page


def test_authenticator_secrets_are_never_shown(client, world):
    root = UserFactory(is_staff=True, is_superuser=True)
    device = totp_device(world["admin"])
    login_staff(client, root)
    page = client.get(change(device)).content.decode()
    assert world["admin"].email in page
    assert device.key not in page and "qrcode" not in page
    assert 'name="key"' not in page


def test_support_staff_see_no_password_hash_and_cannot_grant_privileges(support, world):
    page = support.get(change(world["admin"])).content.decode()
    assert "pbkdf2" not in page and "md5" not in page.lower()
    assert support.post(change(world["admin"]), {"is_superuser": "on"}).status_code == 403
    world["admin"].refresh_from_db()
    assert not world["admin"].is_superuser


# --- Exact permissions ------------------------------------------------------------------


@pytest.mark.parametrize("group_name", [ACCOUNT_REPS, SUPPORT_STAFF])
def test_staff_groups_hold_no_permission_on_accounts_groups_or_authenticators(group_name):
    codes = set(STAFF_GROUP_PERMISSIONS[group_name])
    assert not {c for c in codes if c.split(".")[0] in {"auth", "axes", "otp_totp", "security"}}
    granted = Group.objects.get(name=group_name).permissions.all()
    assert not granted.filter(codename__in=["change_group", "add_group", "delete_group"])
    assert not granted.filter(codename__startswith="change_", content_type__app_label="orgs")


@pytest.mark.parametrize("group_name", [ACCOUNT_REPS, SUPPORT_STAFF])
def test_only_superusers_change_groups(client, group_name):
    login_staff(client, staff_user(group_name))
    group = Group.objects.get(name=group_name)
    url = reverse("admin:auth_group_change", args=[group.pk])
    assert client.get(url).status_code == 403
    perm = Permission.objects.get(codename="change_group")
    assert client.post(url, {"name": group_name, "permissions": [perm.pk]}).status_code == 403
    assert not group.permissions.filter(pk=perm.pk).exists()


def test_a_superuser_may_change_groups(client):
    login_staff(client, UserFactory(is_staff=True, is_superuser=True))
    group = Group.objects.get(name=SUPPORT_STAFF)
    assert client.get(reverse("admin:auth_group_change", args=[group.pk])).status_code == 200


# --- Actions ----------------------------------------------------------------------------


def test_run_health_check_is_audited_with_the_staff_member(
    support, world, monkeypatch, django_capture_on_commit_callbacks
):
    checked = []
    monkeypatch.setattr(
        "connections.services.check_connection_health_logged",
        lambda *, connection_id: checked.append(connection_id) or "active",
    )
    with django_capture_on_commit_callbacks(execute=True):
        page = run_action(support, ByokConnection, "run_health_check", [world["connection"].pk])
    assert "Health check started for Acme Admin Test" in page.content.decode()
    assert checked == [world["connection"].pk]
    event = AuditEvent.objects.get(event_name="AdminRunHealthCheck")
    assert event.organization == world["org"]
    staff_email = page.wsgi_request.user.email
    assert event.principal == staff_email
    assert event.record["userIdentity"]["type"] == "VendorStaff"
    assert event.key_arn == KEY_ARN


def test_account_reps_cannot_run_health_checks_or_resend_notices(client, world, monkeypatch):
    monkeypatch.setattr(
        "connections.services.check_connection_health_logged",
        lambda **kw: pytest.fail("a rep ran a health check"),
    )
    login_staff(client, staff_user(ACCOUNT_REPS))
    page = client.get(changelist(ByokConnection)).content.decode()
    assert "run_health_check" not in page and "resend_notification" not in page
    run_action(client, ByokConnection, "run_health_check", [world["connection"].pk])
    run_action(client, ByokConnection, "resend_notification", [world["connection"].pk])
    assert not AuditEvent.objects.filter(event_name__startswith="Admin").exists()


def test_run_preflight_starts_one_and_audits_it(support, world, monkeypatch):
    monkeypatch.setattr("setup.tasks.run_preflight_task.delay", lambda *a, **k: None)
    page = run_action(support, SetupRequest, "run_preflight", [world["request"].pk])
    assert "preflight #" in page.content.decode()
    run = PreflightRun.objects.get(request=world["request"])
    staff = page.wsgi_request.user
    assert run.started_by == staff
    event = AuditEvent.objects.get(event_name="AdminRunPreflight")
    assert event.principal == staff.email
    assert event.record["requestParameters"]["preflightId"] == run.pk
    again = run_action(support, SetupRequest, "run_preflight", [world["request"].pk])
    assert "still" in again.content.decode()  # one preflight at a time, said clearly
    assert PreflightRun.objects.filter(request=world["request"]).count() == 1


def test_resend_notification_mails_the_org_admins_and_is_audited(
    support, world, django_capture_on_commit_callbacks
):
    world["connection"].state = "revoked"
    world["connection"].state_reason = "Revoked by the customer."
    world["connection"].save()
    with django_capture_on_commit_callbacks(execute=True):
        run_action(support, ByokConnection, "resend_notification", [world["connection"].pk])
    assert [m.to for m in mail.outbox] == [[world["admin"].email]]
    assert "key access is revoked" in mail.outbox[0].subject
    assert "Revoked by the customer." in mail.outbox[0].body
    event = AuditEvent.objects.get(event_name="AdminResendNotification")
    assert event.organization == world["org"]


def test_resend_a_closed_requests_notice_to_the_customer(
    support, world, django_capture_on_commit_callbacks
):
    req = world["request"]
    req.status, req.rejection_reason = "rejected", "Wrong account."
    req.save()
    with django_capture_on_commit_callbacks(execute=True):
        run_action(support, SetupRequest, "resend_notification", [req.pk])
    assert mail.outbox and world["admin"].email in mail.outbox[0].to
    assert "Wrong account." in mail.outbox[0].body
    assert AuditEvent.objects.filter(event_name="AdminResendNotification").count() == 1


def test_superuser_changes_to_an_org_are_audited(client, world):
    root = UserFactory(is_staff=True, is_superuser=True)
    login_staff(client, root)
    org = world["org"]
    response = client.post(
        change(org),
        {
            "name": org.name,
            "plan": "enterprise-trial",
            "cloud": org.cloud,
            "sites-TOTAL_FORMS": "0",
            "sites-INITIAL_FORMS": "0",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(event_name="AdminUpdateOrganization")
    assert event.principal == root.email
    assert event.record["requestParameters"] == {"plan": "enterprise-trial"}


# --- Who gets in --------------------------------------------------------------------------


def test_staff_without_two_factor_are_sent_to_it_before_the_admin(client):
    client.force_login(staff_user(SUPPORT_STAFF))
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("security:two-factor-setup"))


def test_customers_never_get_into_the_admin(client, world):
    client.force_login(world["admin"])
    first = client.get("/admin/connections/byokconnection/")
    assert first.status_code == 302 and first["Location"].startswith("/admin/login/")
    assert client.get(first["Location"]).status_code == 403


def test_the_admin_login_is_the_portals_login(client):
    response = client.get("/admin/login/?next=/admin/keys/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=%2Fadmin%2Fkeys%2F"


def test_support_staff_look_up_reencryption_requests_and_jobs(support, world):
    from reencryption.models import ReencryptionJob, ReencryptionRequest

    req = ReencryptionRequest.objects.create(
        organization=world["org"], connection=world["connection"], requested_by=world["admin"]
    )
    assert support.get(changelist(ReencryptionRequest)).status_code == 200
    page = support.get(change(req)).content.decode()
    assert "Acme Admin Test" in page and 'name="_save"' not in page
    assert support.get(changelist(ReencryptionJob)).status_code == 200
    found = support.get(changelist(ReencryptionRequest), {"q": f"#{req.pk}"}).content.decode()
    assert f"#{req.pk}" in found
