"""The demo world of the brief: organizations, sites, app instances and users."""

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction

from demo.users import DEMO_USERS
from orgs.models import AppInstance, Membership, Organization, Site, User
from orgs.staff_roles import ACCOUNT_REPS, SUPPORT_STAFF

Plan = Organization.Plan
Cloud = Organization.Cloud


DEMO_ORGS = [
    ("Acme Corp", Plan.ENTERPRISE, Cloud.COMMERCIAL),
    ("Globex", Plan.ENTERPRISE, Cloud.COMMERCIAL),
    ("Initech", Plan.STANDARD, Cloud.COMMERCIAL),
    ("Umbrella Gov", Plan.ENTERPRISE, Cloud.GOVERNMENT),
]


def _user(email: str, full_name: str, **flags) -> User:
    user, created = User.objects.get_or_create(
        email=email, defaults={"full_name": full_name, **flags}
    )
    if created:
        user.set_password(settings.DEMO_PASSWORD)
        user.save(update_fields=["password"])
    return user


@transaction.atomic
def seed_demo_world() -> dict[str, Organization]:
    """Create (or leave as they are) the demo orgs, sites, app instances and users."""
    orgs = {}
    for name, plan, cloud in DEMO_ORGS:
        orgs[name], _ = Organization.objects.get_or_create(
            name=name, defaults={"plan": plan, "cloud": cloud}
        )
    users = {u.email: u for u in DEMO_USERS}
    admin = _user("admin@acme.example", users["admin@acme.example"].full_name)
    member = _user("member@acme.example", users["member@acme.example"].full_name)
    globex_admin = _user(
        "other-admin@globex.example", users["other-admin@globex.example"].full_name
    )
    rep = _user("rep@vendor.example", users["rep@vendor.example"].full_name, is_staff=True)
    support = _user(
        "support@vendor.example", users["support@vendor.example"].full_name, is_staff=True
    )
    _user("root@vendor.example", "Root", is_staff=True, is_superuser=True)
    rep.groups.add(Group.objects.get(name=ACCOUNT_REPS))
    support.groups.add(Group.objects.get(name=SUPPORT_STAFF))

    for user, org, role in [
        (admin, orgs["Acme Corp"], Membership.Role.ADMIN),
        (member, orgs["Acme Corp"], Membership.Role.MEMBER),
        (globex_admin, orgs["Globex"], Membership.Role.ADMIN),
    ]:
        Membership.objects.get_or_create(user=user, organization=org, defaults={"role": role})

    # A vendor-managed site for every commercial org, so dashboards have something to show.
    for org_name, site_name, apps in [
        ("Acme Corp", "acme", ["jira", "confluence"]),
        ("Globex", "globex", ["jira"]),
        ("Initech", "initech", ["jira", "jsm"]),
        ("Umbrella Gov", "umbrella", ["confluence"]),
    ]:
        site, _ = Site.objects.get_or_create(
            name=site_name, defaults={"organization": orgs[org_name]}
        )
        for app in apps:
            AppInstance.objects.get_or_create(
                site=site,
                app=app,
                defaults={
                    "encryption": AppInstance.Encryption.VENDOR_MANAGED,
                    "status": AppInstance.Status.ACTIVE,
                },
            )
    return orgs


def sign_first_digests() -> str:
    """Sign every chain's head now, so the demo's audit export verifies at once.

    The beat signs digests every hour; without this, an export made right after ``make run``
    would have nothing signed yet (``python -m audit.verify`` exit status 4, "UNSIGNED").
    """
    from audit.digests import sign_chain_digests

    run = sign_chain_digests()
    if run.breaks:
        return f"Audit digests: {len(run.breaks)} chain(s) did not verify: {run.breaks[0]}"
    return f"Audit digests: {len(run.signed)} chain(s) signed, {run.unchanged} already signed."
