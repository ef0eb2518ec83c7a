"""The setup path from the request to active BYOK apps, and the refusals along the way."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from connections.models import ByokConnection, RegionalKey
from orgs.models import AppInstance, Site
from orgs.staff_roles import ACCOUNT_REPS
from setup import services
from setup.models import PreflightRun, SetupRequest
from setup.preflight import start_preflight
from tests.customer_aws import CUSTOMER_ACCOUNT
from tests.factories import OrganizationFactory, org_admin, staff_user
from tests.support import login_staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def rep():
    return staff_user(ACCOUNT_REPS)


@pytest.fixture
def submitted(db):
    org = OrganizationFactory(name="Globex Test")
    admin = org_admin(org)
    req = services.submit_setup_request(
        org=org,
        actor=admin,
        aws_account_id=CUSTOMER_ACCOUNT,
        site_name="globex-secure",
        location="us",
        apps=["jira", "confluence"],
    )
    return req


def passed_preflight(req, *, key_arns, age=timedelta(minutes=1)):
    return PreflightRun.objects.create(
        request=req,
        status=PreflightRun.Status.PASSED,
        key_arns=key_arns,
        finished_at=timezone.now() - age,
    )


def test_claim_assigns_the_request_to_one_rep(submitted, rep):
    req = services.claim_setup_request(request_id=submitted.pk, rep=rep)
    assert req.status == SetupRequest.Status.CLAIMED and req.assignee == rep
    other = staff_user(ACCOUNT_REPS)
    with pytest.raises(services.RequestActionRefused, match="already claimed"):
        services.claim_setup_request(request_id=submitted.pk, rep=other)


def test_only_the_assignee_may_provision_or_reject(submitted, rep):
    services.claim_setup_request(request_id=submitted.pk, rep=rep)
    other = staff_user(ACCOUNT_REPS)
    with pytest.raises(services.RequestActionRefused, match="Only the assignee"):
        services.provision_setup_request(request_id=submitted.pk, rep=other)
    with pytest.raises(services.RequestActionRefused, match="Only the assignee"):
        services.reject_setup_request(request_id=submitted.pk, rep=other, reason="no")


def test_provision_needs_a_passing_preflight_younger_than_a_day(submitted, rep):
    services.claim_setup_request(request_id=submitted.pk, rep=rep)
    with pytest.raises(services.RequestActionRefused, match="passing preflight"):
        services.provision_setup_request(request_id=submitted.pk, rep=rep)
    passed_preflight(submitted, key_arns={}, age=timedelta(hours=25))
    with pytest.raises(services.RequestActionRefused, match="passing preflight"):
        services.provision_setup_request(request_id=submitted.pk, rep=rep)
    PreflightRun.objects.create(
        request=submitted, status=PreflightRun.Status.FAILED, finished_at=timezone.now()
    )
    with pytest.raises(services.RequestActionRefused, match="passing preflight"):
        services.provision_setup_request(request_id=submitted.pk, rep=rep)
    assert not Site.objects.filter(name="globex-secure").exists()
    assert ByokConnection.objects.get().state == "pending"


def test_reject_closes_with_a_reason_the_customer_sees(submitted, rep, client):
    services.claim_setup_request(request_id=submitted.pk, rep=rep)
    with pytest.raises(services.RequestActionRefused, match="reason"):
        services.reject_setup_request(request_id=submitted.pk, rep=rep, reason="  ")
    services.reject_setup_request(request_id=submitted.pk, rep=rep, reason="Wrong account.")
    submitted.refresh_from_db()
    assert submitted.status == "rejected"
    admin = submitted.requested_by
    client.force_login(admin)
    page = client.get(f"/orgs/{submitted.organization_id}/byok/requests/{submitted.pk}/")
    assert "Wrong account." in page.content.decode()
    assert AuditEvent.objects.filter(event_name="RejectByokSetupRequest").exists()


def test_whole_path_preflight_then_provision_makes_apps_active(
    submitted, rep, customer_aws, django_capture_on_commit_callbacks
):
    connection = ByokConnection.objects.get(organization=submitted.organization)
    key_arns = customer_aws.set_up(["us-east-1", "us-west-2"], external_id=connection.external_id)
    services.claim_setup_request(request_id=submitted.pk, rep=rep)
    with django_capture_on_commit_callbacks(execute=True):
        run = start_preflight(setup_request=submitted, actor=rep)
    run.refresh_from_db()
    assert run.status == PreflightRun.Status.PASSED, run.checks
    assert run.key_arns == key_arns

    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.provision_setup_request(request_id=submitted.pk, rep=rep)

    connection.refresh_from_db()
    assert connection.state == "active"
    assert {
        k.region: k.key_arn for k in RegionalKey.objects.filter(connection=connection)
    } == key_arns
    apps = AppInstance.objects.filter(site__name="globex-secure")
    assert {(a.app, a.encryption, a.status) for a in apps} == {
        ("jira", "byok", "active"),
        ("confluence", "byok", "active"),
    }
    assert all(a.data_keys.filter(is_current=True).exists() for a in apps)
    recipients = {r for m in mail.outbox for r in m.to}
    assert submitted.requested_by.email in recipients and rep.email in recipients
    names = set(
        AuditEvent.objects.filter(organization=submitted.organization).values_list(
            "event_name", flat=True
        )
    )
    assert {
        "RequestByokSetup",
        "ClaimByokSetupRequest",
        "StartPreflight",
        "ProvisionByokApps",
        "ActivateByokApp",
        "GenerateDataKey",
        "AssumeRole",
    } <= names


def test_provisioning_refuses_a_key_different_from_the_connected_one(submitted, rep):
    connection = ByokConnection.objects.get()
    services.claim_setup_request(request_id=submitted.pk, rep=rep)
    connection.state = "active"
    connection.save()
    RegionalKey.objects.create(connection=connection, region="us-east-1", key_arn="arn:old")
    passed_preflight(submitted, key_arns={"us-east-1": "arn:new", "us-west-2": "arn:w"})
    with pytest.raises(services.RequestActionRefused, match="re-encryption"):
        services.provision_setup_request(request_id=submitted.pk, rep=rep)
    assert not Site.objects.filter(name="globex-secure").exists()
    assert SetupRequest.objects.get().status == "claimed"


def test_staff_pages_are_for_account_reps_only(client, submitted):
    client.force_login(submitted.requested_by)
    assert client.get("/staff/requests/").status_code == 403
    assert client.post(f"/staff/requests/{submitted.pk}/claim/").status_code == 403
    login_staff(client, staff_user("Support staff"))
    assert client.get("/staff/requests/").status_code == 403


def test_queue_filters_and_counts(client, submitted, rep):
    login_staff(client, rep)
    page = client.get("/staff/requests/").content.decode()
    assert "globex-secure" in page and "Submitted: 1" in page
    assert "globex-secure" not in client.get("/staff/requests/?location=eu").content.decode()
    assert "globex-secure" not in client.get("/staff/requests/?age=3").content.decode()
    assert client.get("/staff/requests/?status=bogus&age=x").status_code == 200


def test_claim_through_the_page_shows_a_clear_message_to_the_loser(client, submitted, rep):
    other = staff_user(ACCOUNT_REPS)
    login_staff(client, rep)
    client.post(f"/staff/requests/{submitted.pk}/claim/")
    login_staff(client, other)
    response = client.post(f"/staff/requests/{submitted.pk}/claim/", follow=True)
    assert "already claimed" in response.content.decode()
