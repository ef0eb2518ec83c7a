import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from orgs.models import AppInstance, Membership, Organization, Site, User
from tests.factories import (
    AppInstanceFactory,
    MembershipFactory,
    OrganizationFactory,
    SiteFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", ["abc", "acme-secure", "a1b2", "x" * 63, "9lives"])
def test_site_accepts_valid_names(name):
    Site(organization=OrganizationFactory(), name=name).full_clean()


@pytest.mark.parametrize(
    "name", ["ab", "x" * 64, "Acme", "-acme", "acme-", "ac_me", "ac me", "acmé"]
)
def test_site_rejects_invalid_names_in_form_and_database(name):
    org = OrganizationFactory()
    with pytest.raises(ValidationError):
        Site(organization=org, name=name).full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        Site.objects.create(organization=org, name=name)


def test_site_names_are_globally_unique_across_orgs():
    SiteFactory(name="shared-name")
    with pytest.raises(IntegrityError):
        SiteFactory(name="shared-name")


def test_one_app_instance_per_app_per_site():
    site = SiteFactory()
    AppInstanceFactory(site=site, app=AppInstance.App.JIRA)
    AppInstanceFactory(site=site, app=AppInstance.App.CONFLUENCE)
    with pytest.raises(IntegrityError):
        AppInstanceFactory(site=site, app=AppInstance.App.JIRA)


def test_membership_is_unique_per_user_and_org():
    membership = MembershipFactory()
    with pytest.raises(IntegrityError):
        MembershipFactory(user=membership.user, organization=membership.organization)


@pytest.mark.parametrize(
    "model, field, value",
    [
        (Organization, "plan", "platinum"),
        (Organization, "cloud", "moon"),
    ],
)
def test_database_refuses_values_outside_the_choices(model, field, value):
    with pytest.raises(IntegrityError):
        model.objects.create(name="Bad", **{field: value})


def test_app_instance_refuses_unknown_app_encryption_and_status():
    site = SiteFactory()
    for field, value in [("app", "trello"), ("encryption", "none"), ("status", "gone")]:
        values = {"app": "jira", "encryption": "byok", "status": "active", field: value}
        with pytest.raises(IntegrityError), transaction.atomic():
            AppInstance.objects.create(site=site, **values)


def test_membership_role_is_admin_or_member():
    with pytest.raises(IntegrityError):
        Membership.objects.create(
            user=UserFactory(), organization=OrganizationFactory(), role="owner"
        )


def test_users_log_in_by_email_case_insensitively(client):
    UserFactory(email="Casey@Example.com")
    assert User.objects.get_by_natural_key("casey@example.com").email == "casey@example.com"
    with pytest.raises(IntegrityError):
        User.objects.create_user(email="CASEY@example.com", password="x")
