"""Two account reps racing on PostgreSQL: exactly one wins, the other gets a clear refusal."""

import threading

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from connections.models import ByokConnection
from orgs.models import AppInstance
from orgs.staff_roles import ACCOUNT_REPS
from setup import services
from setup.models import PreflightRun, SetupRequest
from tests.factories import OrganizationFactory, org_admin, staff_user

pytestmark = pytest.mark.django_db(transaction=True)


def race(functions):
    """Run the callables at the same moment in threads (each with its own DB connection)."""
    barrier = threading.Barrier(len(functions))
    outcomes = [None] * len(functions)

    def run(i, fn):
        try:
            barrier.wait()
            outcomes[i] = ("ok", fn())
        except Exception as exc:  # noqa: BLE001 — the outcome is what we assert on
            outcomes[i] = ("refused", exc)
        finally:
            db_connection.close()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(functions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


@pytest.fixture
def request_(db):
    org = OrganizationFactory()
    return services.submit_setup_request(
        org=org, actor=org_admin(org), aws_account_id="210987654321", site_name="race-site",
        location="de", apps=["jira"],
    )  # fmt: skip


def test_two_reps_claiming_at_once_one_wins(request_):
    reps = [staff_user(ACCOUNT_REPS), staff_user(ACCOUNT_REPS)]
    claims = [
        lambda rep=rep: services.claim_setup_request(request_id=request_.pk, rep=rep)
        for rep in reps
    ]
    outcomes = race(claims)
    kinds = sorted(kind for kind, _ in outcomes)
    assert kinds == ["ok", "refused"]
    refusal = next(value for kind, value in outcomes if kind == "refused")
    assert isinstance(refusal, services.RequestActionRefused)
    assert "already claimed" in str(refusal)
    assert SetupRequest.objects.get().assignee in reps


def test_provisioning_twice_at_once_provisions_once(request_):
    rep = staff_user(ACCOUNT_REPS)
    services.claim_setup_request(request_id=request_.pk, rep=rep)
    PreflightRun.objects.create(
        request=request_,
        status="passed",
        key_arns={"eu-central-1": "arn:aws:kms:eu-central-1:210987654321:key/k"},
        finished_at=timezone.now(),
    )
    from django.test.utils import override_settings

    # Only the race matters here: the activation task is covered elsewhere.
    with override_settings(CELERY_TASK_ALWAYS_EAGER=False, CELERY_BROKER_URL="memory://"):
        outcomes = race([
            lambda: services.provision_setup_request(request_id=request_.pk, rep=rep),
            lambda: services.provision_setup_request(request_id=request_.pk, rep=rep),
        ])  # fmt: skip
    assert sorted(kind for kind, _ in outcomes) == ["ok", "refused"]
    assert AppInstance.objects.filter(site__name="race-site").count() == 1
    assert ByokConnection.objects.get().state == "active"
