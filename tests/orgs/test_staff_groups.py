import pytest
from django.contrib.auth.models import Group

from orgs.staff_roles import STAFF_GROUP_PERMISSIONS

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("group_name", list(STAFF_GROUP_PERMISSIONS))
def test_staff_groups_have_exactly_their_permissions(group_name):
    group = Group.objects.get(name=group_name)
    granted = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
    assert granted == set(STAFF_GROUP_PERMISSIONS[group_name])


def test_no_staff_group_may_change_or_delete_audit_events_or_groups():
    for group in Group.objects.all():
        codenames = set(group.permissions.values_list("codename", flat=True))
        assert not {"change_auditevent", "delete_auditevent", "change_group"} & codenames


def test_only_account_reps_may_process_requests():
    holders = Group.objects.filter(permissions__codename="process_setuprequest")
    assert list(holders.values_list("name", flat=True)) == ["Account representatives"]
