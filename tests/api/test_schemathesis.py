"""The live OpenAPI schema, fuzzed by schemathesis against the portal (WSGI, in process).

With an admin's all-scopes token: no 5xx, every answer conforms to the schema (status, content
type, headers, body), and no answer ever shows another organization's data: each case also
runs against another organization's id and must be a 404 that names nothing of it. Bounded:
a few examples per operation.

Not checked: that every request the schema allows is accepted. The schema says what a value
looks like; the service decides what it may be (a 12-digit account that is the org's, a site
name nobody has, a date between 1970 and 8999), and refuses the rest with a 400 problem.
"""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import ignored_auth, positive_data_acceptance

from api.models import SCOPES
from audit.services import record_event
from connections.models import ByokConnection
from tests.api.support import make_token
from tests.factories import OrganizationFactory, SetupRequestFactory, SiteFactory, org_admin

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

VICTIM_NAME = "Victim Fuzz Org ZQ"
VICTIM_SENTINELS = [VICTIM_NAME, "victim-fuzz-site-zq", "343434343434", "VictimFuzzEvent"]


def _live_schema():
    """The schema ``/api/v1/schema/`` serves (the same generator), and the portal as its app:
    loaded at collection, before any database exists, so not fetched over WSGI."""
    loaded = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    loaded.app = get_wsgi_application()
    return loaded


schema = _live_schema()


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.API_RATE_LIMITS = {"api_token": "100000/min", "api_anon": "100000/min"}


@pytest.fixture
def fuzz_world(byok_org, byok_admin):
    victim = OrganizationFactory(name=VICTIM_NAME, plan="enterprise")
    ByokConnection.objects.create(
        organization=victim, aws_account_id="343434343434", location="us", state="active"
    )
    SiteFactory(organization=victim, name="victim-fuzz-site-zq")
    SetupRequestFactory(organization=victim, aws_account_id="343434343434")
    record_event(org=victim, event_name="VictimFuzzEvent", actor=org_admin(victim))
    record_event(org=byok_org, event_name="Decrypt", actor=byok_admin)
    return {
        "org": byok_org,
        "victim": victim,
        "headers": {"Authorization": f"Bearer {make_token(byok_org, byok_admin, SCOPES)}"},
    }


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_contract_and_its_tenants_apart(case, fuzz_world):
    if "org_id" in (case.path_parameters or {}):
        case.path_parameters["org_id"] = fuzz_world["org"].pk
    response = case.call_and_validate(
        headers=fuzz_world["headers"], excluded_checks=[positive_data_acceptance]
    )
    _assert_nothing_of_the_victim(response)
    if "org_id" in (case.path_parameters or {}):
        case.path_parameters["org_id"] = fuzz_world["victim"].pk
        foreign = case.call(headers=fuzz_world["headers"])
        # 401: a generated case with its own (broken) Authorization header.
        assert foreign.status_code in (400, 401, 404, 405, 415), f"{case.method} {case.path}"
        _assert_nothing_of_the_victim(foreign)


def _assert_nothing_of_the_victim(response):
    text = response.text or ""
    leaked = [s for s in VICTIM_SENTINELS if s in text]
    assert not leaked, f"shows another organization's {leaked}"


def test_stateful_sequences_follow_the_schemas_links(fuzz_world):
    """Sequences of calls (the schema's links: a submitted setup request read back by its id,
    an audit page to the next page and to an event), state carried between them (a revocation
    and what reads show after it), the same checks at every step."""
    world = fuzz_world
    answered = set()

    class Workflow(schema.as_state_machine()):
        def before_call(self, case):
            if "org_id" in (case.path_parameters or {}):
                case.path_parameters["org_id"] = world["org"].pk

        def get_call_kwargs(self, case):
            return {"headers": world["headers"]}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            # ignored_auth re-sends with these kwargs (the token) and so cannot strip the token
            # here; the test above runs it, and tests/api/test_tokens_auth.py covers 401s.
            case.validate_response(
                response,
                excluded_checks=[positive_data_acceptance, ignored_auth],
                transport_kwargs=kwargs,
            )
            _assert_nothing_of_the_victim(response)
            answered.add((case.method, case.path, response.status_code))

    Workflow.run(
        settings=settings(
            max_examples=40,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
    # Sequences ran and changed state (a revocation, then reads of the revoked connection).
    assert ("POST", "/api/v1/orgs/{org_id}/byok/revoke", 200) in answered, sorted(answered)
