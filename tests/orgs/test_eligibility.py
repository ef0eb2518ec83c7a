import pytest

from orgs.eligibility import byok_eligibility
from orgs.models import Organization

Plan, Cloud = Organization.Plan, Organization.Cloud

EXPECTED = {
    (plan, cloud): (plan in (Plan.ENTERPRISE, Plan.ENTERPRISE_TRIAL) and cloud == Cloud.COMMERCIAL)
    for plan in Plan
    for cloud in Cloud
}


@pytest.mark.parametrize("plan, cloud", list(EXPECTED))
def test_eligibility_matrix_covers_every_plan_and_cloud(plan, cloud):
    result = byok_eligibility(Organization(name="X", plan=plan, cloud=cloud))
    assert result.eligible is EXPECTED[(plan, cloud)]
    assert result.reason


@pytest.mark.parametrize("plan", list(Plan))
def test_government_cloud_is_told_byok_is_not_available(plan):
    result = byok_eligibility(Organization(name="Gov", plan=plan, cloud=Cloud.GOVERNMENT))
    assert "not available" in result.reason
    assert "Government Cloud" in result.reason


@pytest.mark.parametrize("plan", [Plan.FREE, Plan.STANDARD, Plan.PREMIUM])
def test_lower_plans_are_told_they_need_enterprise(plan):
    result = byok_eligibility(Organization(name="Small", plan=plan, cloud=Cloud.COMMERCIAL))
    assert "Enterprise" in result.reason
    assert Organization(plan=plan).get_plan_display() in result.reason
