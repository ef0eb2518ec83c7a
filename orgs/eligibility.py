"""Whether an organization may use BYOK, and why not, in words a customer understands."""

from dataclasses import dataclass

from orgs.models import Organization

BYOK_PLANS = frozenset({Organization.Plan.ENTERPRISE, Organization.Plan.ENTERPRISE_TRIAL})


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    reason: str

    def __bool__(self) -> bool:
        return self.eligible


def byok_eligibility(org: Organization) -> Eligibility:
    if org.cloud == Organization.Cloud.GOVERNMENT:
        return Eligibility(
            False,
            "Bring your own key is not available for Government Cloud organizations.",
        )
    if org.plan not in BYOK_PLANS:
        return Eligibility(
            False,
            f"Bring your own key needs the Enterprise plan (or an Enterprise trial); "
            f"{org.name} is on the {org.get_plan_display()} plan.",
        )
    return Eligibility(
        True, f"{org.name} can encrypt its app data with keys in its own AWS account."
    )
