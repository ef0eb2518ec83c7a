"""Every validation rule of the setup request form, and that nothing is saved on error."""

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from connections.models import ByokConnection
from orgs.models import AppInstance
from setup.forms import SetupRequestForm
from setup.models import SetupRequest
from tests.factories import (
    PASSWORD,
    AppInstanceFactory,
    OrganizationFactory,
    SiteFactory,
    UserFactory,
    org_admin,
)

pytestmark = pytest.mark.django_db
ACCOUNT = "210987654321"


def form_for(org, **data):
    payload = {
        "aws_account_id": ACCOUNT,
        "location": "us",
        "apps": ["jira"],
        "new_site_name": "new-site",
    }
    payload.update(data)
    return SetupRequestForm(payload, org=org)


def errors_of(form) -> str:
    assert not form.is_valid()
    return " ".join(str(e) for errs in form.errors.values() for e in errs)


def byok_site(org, name="secure", apps=("jira",)):
    site = SiteFactory(organization=org, name=name)
    for app in apps:
        AppInstanceFactory(site=site, app=app, encryption=AppInstance.Encryption.BYOK)
    ByokConnection.objects.get_or_create(
        organization=org, defaults={"aws_account_id": ACCOUNT, "location": "us", "state": "active"}
    )
    return site


def test_valid_request_for_a_new_site():
    form = form_for(OrganizationFactory())
    assert form.is_valid(), form.errors
    assert form.cleaned_data["site_name"] == "new-site"


@pytest.mark.parametrize("value", ["12345678901", "1234567890123", "12345678901a", "abc"])
def test_account_id_must_be_exactly_12_digits(value):
    assert "exactly 12 digits" in errors_of(form_for(OrganizationFactory(), aws_account_id=value))


def test_account_id_is_required():
    assert "required" in errors_of(form_for(OrganizationFactory(), aws_account_id=""))


def test_account_id_accepts_dashes_as_aws_console_shows_them():
    form = form_for(OrganizationFactory(), aws_account_id="2109-8765-4321")
    assert form.is_valid(), form.errors
    assert form.cleaned_data["aws_account_id"] == ACCOUNT


def test_vendor_account_is_refused(settings):
    assert "vendor's own AWS account" in errors_of(
        form_for(OrganizationFactory(), aws_account_id=settings.VENDOR_AWS_ACCOUNT_ID)
    )


def test_one_aws_account_per_org():
    org = OrganizationFactory()
    byok_site(org)
    assert "All BYOK sites of an organization use that one account" in errors_of(
        form_for(org, aws_account_id="999988887777")
    )


@pytest.mark.parametrize("name", ["ab", "Upper", "-dash", "under_score", "x" * 64])
def test_site_name_rules(name):
    assert "3 to 63 characters" in errors_of(form_for(OrganizationFactory(), new_site_name=name))


def test_site_name_taken_by_another_org():
    SiteFactory(name="taken-name")
    assert "is taken" in errors_of(form_for(OrganizationFactory(), new_site_name="taken-name"))


def test_own_vendor_managed_site_cannot_be_converted():
    org = OrganizationFactory()
    SiteFactory(organization=org, name="plain-site")
    assert "cannot be converted" in errors_of(form_for(org, new_site_name="plain-site"))


def test_own_byok_site_may_be_extended_by_name_or_choice():
    org = OrganizationFactory()
    byok_site(org, "secure", apps=("jira",))
    by_choice = form_for(org, existing_site="secure", new_site_name="", apps=["confluence"])
    assert by_choice.is_valid(), by_choice.errors
    by_name = form_for(org, new_site_name="secure", apps=["confluence"])
    assert by_name.is_valid(), by_name.errors


def test_app_already_byok_on_that_site():
    org = OrganizationFactory()
    byok_site(org, "secure", apps=("jira",))
    assert "already uses your keys" in errors_of(
        form_for(org, existing_site="secure", new_site_name="")
    )


def test_vendor_managed_app_on_a_byok_site_cannot_be_converted():
    org = OrganizationFactory()
    site = byok_site(org, "secure", apps=("jira",))
    AppInstanceFactory(site=site, app="jsm", encryption=AppInstance.Encryption.VENDOR_MANAGED)
    assert "cannot be converted" in errors_of(
        form_for(org, existing_site="secure", new_site_name="", apps=["jsm"])
    )


def test_open_request_already_covering_that_site_and_app():
    org = OrganizationFactory()
    SetupRequest.objects.create(
        organization=org,
        requested_by=UserFactory(),
        aws_account_id=ACCOUNT,
        site_name="new-site",
        location="us",
        apps=["jira"],
    )
    assert "already asks for Jira" in errors_of(form_for(org))
    assert form_for(org, apps=["confluence"]).is_valid()


def test_location_of_an_existing_byok_site_cannot_change():
    org = OrganizationFactory()
    byok_site(org, "secure")
    assert "use the same one" in errors_of(
        form_for(org, existing_site="secure", new_site_name="", apps=["confluence"], location="eu")
    )


def test_choose_a_site_or_name_one():
    assert "Name a new site" in errors_of(form_for(OrganizationFactory(), new_site_name=""))


def test_at_least_one_app():
    assert "Choose at least one app" in errors_of(form_for(OrganizationFactory(), apps=[]))


def test_invalid_post_saves_nothing_and_shows_errors(client):
    org = OrganizationFactory()
    user = org_admin(org)
    client.login(username=user.email, password=PASSWORD)
    response = client.post(
        f"/orgs/{org.pk}/byok/setup/",
        {"aws_account_id": "12", "location": "us", "apps": ["jira"], "new_site_name": "ok-site"},
    )
    assert response.status_code == 200
    assert "exactly 12 digits" in response.content.decode()
    assert not SetupRequest.objects.exists()
    assert not ByokConnection.objects.exists()


def test_valid_post_creates_request_and_pending_connection(client):
    org = OrganizationFactory()
    user = org_admin(org)
    client.login(username=user.email, password=PASSWORD)
    response = client.post(
        f"/orgs/{org.pk}/byok/setup/",
        {
            "aws_account_id": ACCOUNT,
            "location": "eu",
            "apps": ["jira", "jsm"],
            "new_site_name": "fresh",
        },
    )
    req = SetupRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/orgs/{org.pk}/byok/requests/{req.pk}/"
    assert req.apps == ["jira", "jsm"]
    connection = ByokConnection.objects.get(organization=org)
    assert connection.state == "pending"
    assert connection.external_id.startswith("byok-")
    detail = client.get(response["Location"]).content.decode()
    assert connection.external_id in detail


@pytest.mark.parametrize(
    "plan, cloud, expected",
    [
        ("standard", "commercial", "Enterprise plan"),
        ("enterprise", "government", "not available for Government Cloud"),
    ],
)
def test_ineligible_orgs_are_told_why(client, plan, cloud, expected):
    org = OrganizationFactory(plan=plan, cloud=cloud)
    user = org_admin(org)
    client.login(username=user.email, password=PASSWORD)
    response = client.get(f"/orgs/{org.pk}/byok/setup/")
    assert response.status_code == 200
    assert expected in response.content.decode()
    assert (
        client.post(f"/orgs/{org.pk}/byok/setup/", {"aws_account_id": ACCOUNT}).status_code == 200
    )
    assert not SetupRequest.objects.exists()


text = st.text(max_size=80)


@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    account=text,
    site=text,
    new_site=text,
    location=st.one_of(text, st.sampled_from(["us", "eu", "au"])),
    apps=st.lists(st.one_of(text, st.sampled_from(["jira", "confluence", "jsm"])), max_size=4),
)
def test_no_form_input_yields_a_500_or_a_partial_write(
    client, account, site, new_site, location, apps
):
    org = OrganizationFactory()
    user = org_admin(org)
    client.force_login(user)
    before = SetupRequest.objects.count()
    response = client.post(
        f"/orgs/{org.pk}/byok/setup/",
        {
            "aws_account_id": account,
            "existing_site": site,
            "new_site_name": new_site,
            "location": location,
            "apps": apps,
        },
    )
    assert response.status_code in (200, 302)
    created = SetupRequest.objects.count() - before
    if response.status_code == 200:
        assert created == 0
        assert not ByokConnection.objects.filter(organization=org).exists()
    else:
        assert created == 1
