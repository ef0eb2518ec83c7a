"""The vendor's own changes are in the log too: every change to vendor staff and their
permissions lands in the vendor chain, with who made it, wherever it was made (the admin or a
shell), and never a password hash or an authenticator secret."""

import json

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from audit.models import AuditEvent
from orgs.staff_roles import ACCOUNT_REPS, SUPPORT_STAFF
from tests.factories import UserFactory, org_admin, staff_user
from tests.support import login_staff, totp_device

pytestmark = pytest.mark.django_db

ADMIN_IP = "198.51.100.44"


def vendor_events(name: str):
    return AuditEvent.objects.filter(organization__isnull=True, event_name=name).order_by(
        "sequence"
    )


def only(name: str) -> dict:
    (event,) = vendor_events(name)
    return event.record


@pytest.fixture
def root(client):
    user = UserFactory(is_staff=True, is_superuser=True)
    login_staff(client, user)
    return user


def change_user(client, user, **fields):
    data = {
        "email": user.email,
        "full_name": user.full_name,
        "is_active": "on",
        "is_staff": "on" if user.is_staff else "",
        "is_superuser": "",
        "groups": [g.pk for g in user.groups.all()],
    }
    data.update(fields)
    data = {k: v for k, v in data.items() if v not in ("", None)}
    return client.post(
        reverse("admin:orgs_user_change", args=[user.pk]), data, REMOTE_ADDR=ADMIN_IP
    )


def test_a_superuser_granting_superuser_and_a_group_in_the_admin_is_audited(client, root):
    rep = staff_user(ACCOUNT_REPS)
    support = Group.objects.get(name=SUPPORT_STAFF)
    response = change_user(
        client,
        rep,
        is_superuser="on",
        groups=[Group.objects.get(name=ACCOUNT_REPS).pk, support.pk],
    )
    assert response.status_code == 302, response.content.decode()[:2000]

    flags = only("UpdateStaffUser")
    assert flags["requestParameters"] == {
        "userName": rep.email,
        "changes": {"is_superuser": {"from": False, "to": True}},
    }
    added = vendor_events("AddUserToGroup").last().record
    assert added["requestParameters"] == {"userName": rep.email, "groupNames": [SUPPORT_STAFF]}
    for record in (flags, added):
        assert record["userIdentity"]["userName"] == root.email
        assert record["userIdentity"]["type"] == "VendorStaff"
        assert record["sourceIPAddress"] == ADMIN_IP


def test_removing_a_group_and_deactivating_staff_in_the_admin_is_audited(client, root):
    rep = staff_user(ACCOUNT_REPS)
    change_user(client, rep, is_active="", groups=[])
    assert only("RemoveUserFromGroup")["requestParameters"] == {
        "userName": rep.email,
        "groupNames": [ACCOUNT_REPS],
    }
    assert only("UpdateStaffUser")["requestParameters"]["changes"] == {
        "is_active": {"from": True, "to": False}
    }


def test_setting_a_staff_password_in_the_admin_is_audited_without_the_hash(client, root):
    rep = staff_user(ACCOUNT_REPS)
    before = vendor_events("UpdateLoginProfile").count()
    new = "another-Long-passphrase-77"
    response = client.post(
        reverse("admin:auth_user_password_change", args=[rep.pk]),
        {"password1": new, "password2": new, "usable_password": "true"},
        REMOTE_ADDR=ADMIN_IP,
    )
    assert response.status_code == 302
    events = list(vendor_events("UpdateLoginProfile"))
    assert len(events) == before + 1
    record = events[-1].record
    assert record["requestParameters"] == {
        "userName": rep.email,
        "passwordChanged": True,
        "usablePassword": True,
    }
    assert record["userIdentity"]["userName"] == root.email
    rep.refresh_from_db()
    assert rep.password not in json.dumps(record)
    assert rep.password.split("$")[-1] not in json.dumps(record)


def test_changes_in_a_shell_are_audited_with_the_operator(client):
    support = staff_user(SUPPORT_STAFF)
    support.is_superuser = True
    support.save()
    record = only("UpdateStaffUser")
    assert record["userIdentity"]["type"] == "VendorOperator"
    assert record["userIdentity"]["userName"].startswith("os:")
    assert record["requestParameters"]["changes"] == {"is_superuser": {"from": False, "to": True}}


def test_making_a_customer_staff_is_audited_and_a_customers_own_changes_are_not():
    customer = org_admin()
    customer.set_password("a-new-Customer-passphrase-1")
    customer.full_name = "Renamed"
    customer.save()
    assert not AuditEvent.objects.filter(organization__isnull=True).exists()
    customer.is_staff = True
    customer.save()
    assert only("UpdateStaffUser")["requestParameters"]["changes"] == {
        "is_staff": {"from": False, "to": True}
    }


def test_a_new_staff_user_is_audited():
    user = UserFactory(is_staff=True)
    assert only("CreateStaffUser")["requestParameters"] == {
        "userName": user.email,
        "is_staff": True,
        "is_superuser": False,
        "is_active": True,
    }


def test_direct_permissions_and_group_membership_from_either_side_are_audited():
    user = UserFactory()
    perm = Permission.objects.get(codename="change_group")
    user.user_permissions.add(perm)
    assert only("AttachUserPolicy")["requestParameters"] == {
        "userName": user.email,
        "permissions": ["auth.change_group"],
    }
    perm.user_set.remove(user)
    assert only("DetachUserPolicy")["requestParameters"]["permissions"] == ["auth.change_group"]
    group = Group.objects.get(name=SUPPORT_STAFF)
    group.user_set.add(user)
    assert only("AddUserToGroup")["requestParameters"] == {
        "userName": user.email,
        "groupNames": [SUPPORT_STAFF],
    }
    user.groups.clear()
    assert only("RemoveUserFromGroup")["requestParameters"]["groupNames"] == [SUPPORT_STAFF]


def test_group_permission_changes_in_the_admin_are_audited(client, root):
    group = Group.objects.get(name=SUPPORT_STAFF)
    kept = list(group.permissions.values_list("pk", flat=True))
    dropped = Permission.objects.get(codename="run_health_check")
    added = Permission.objects.get(codename="view_group")
    permissions = [pk for pk in kept if pk != dropped.pk] + [added.pk]
    response = client.post(
        reverse("admin:auth_group_change", args=[group.pk]),
        {"name": SUPPORT_STAFF, "permissions": permissions},
        REMOTE_ADDR=ADMIN_IP,
    )
    assert response.status_code == 302
    assert only("AttachGroupPolicy")["requestParameters"] == {
        "groupName": SUPPORT_STAFF,
        "permissions": ["auth.view_group"],
    }
    detached = only("DetachGroupPolicy")
    assert detached["requestParameters"]["permissions"] == ["connections.run_health_check"]
    assert detached["userIdentity"]["userName"] == root.email


def test_groups_created_renamed_and_deleted_are_audited():
    group = Group.objects.create(name="Temporary helpers")
    member = UserFactory()
    group.user_set.add(member)
    group.name = "Former helpers"
    group.save()
    group.delete()
    assert only("CreateGroup")["requestParameters"] == {"groupName": "Temporary helpers"}
    assert only("UpdateGroup")["requestParameters"] == {
        "groupName": "Temporary helpers",
        "newGroupName": "Former helpers",
    }
    assert only("DeleteGroup")["requestParameters"] == {
        "groupName": "Former helpers",
        "memberUserNames": [member.email],
    }


def test_a_staff_authenticator_created_confirmed_and_deleted_is_audited(client, root):
    rep = staff_user(ACCOUNT_REPS)
    totp_device(rep, confirmed=True)  # created usable at once (a shell, a test)
    device = totp_device(rep, confirmed=False)  # the set-up page's pending device: no event
    device.confirmed = True
    device.save()
    device.verify_token("000000")  # a code check saves the device: not an event
    response = client.post(
        reverse("admin:otp_totp_totpdevice_delete", args=[device.pk]),
        {"post": "yes"},
        REMOTE_ADDR=ADMIN_IP,
    )
    assert response.status_code == 302
    names = [
        e.event_name
        for e in AuditEvent.objects.filter(
            organization__isnull=True, event_name__contains="MFADevice"
        ).order_by("sequence")
        if e.record["requestParameters"]["userName"] == rep.email
    ]
    assert names == ["CreateVirtualMFADevice", "EnableMFADevice", "DeleteVirtualMFADevice"]
    (deleted,) = [e.record for e in vendor_events("DeleteVirtualMFADevice")]
    assert deleted["requestParameters"]["userName"] == rep.email
    assert deleted["userIdentity"]["userName"] == root.email
    for event in AuditEvent.objects.all():
        assert device.key not in json.dumps(event.record)


def test_a_customers_authenticator_stays_in_their_orgs_log():
    customer = org_admin()
    totp_device(customer).delete()
    assert not AuditEvent.objects.filter(organization__isnull=True).exists()
