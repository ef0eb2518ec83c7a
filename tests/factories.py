import factory

from orgs.models import AppInstance, Membership, Organization, Site, User

PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    full_name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    plan = Organization.Plan.ENTERPRISE
    cloud = Organization.Cloud.COMMERCIAL


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Membership.Role.ADMIN


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"site-{n}")


class AppInstanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AppInstance

    site = factory.SubFactory(SiteFactory)
    app = AppInstance.App.JIRA
    encryption = AppInstance.Encryption.VENDOR_MANAGED
    status = AppInstance.Status.ACTIVE


def org_admin(org=None, **kwargs) -> User:
    membership = MembershipFactory(
        organization=org or OrganizationFactory(), role=Membership.Role.ADMIN, **kwargs
    )
    return membership.user


def org_member(org, **kwargs) -> User:
    return MembershipFactory(organization=org, role=Membership.Role.MEMBER, **kwargs).user


def staff_user(group_name: str) -> User:
    from django.contrib.auth.models import Group

    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get(name=group_name))
    return user


# --- Review requests (setup and re-encryption) and their preflight runs ----------------------


class ByokConnectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "connections.ByokConnection"

    organization = factory.SubFactory(OrganizationFactory)
    aws_account_id = "123456789012"
    location = "eu"
    state = "active"


class SetupRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "setup.SetupRequest"

    organization = factory.SubFactory(OrganizationFactory)
    requested_by = factory.LazyAttribute(lambda o: org_admin(o.organization))
    aws_account_id = "123456789012"
    site_name = factory.Sequence(lambda n: f"site-{n}")
    location = "eu"
    apps = factory.LazyFunction(lambda: ["jira"])


class ReencryptionRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "reencryption.ReencryptionRequest"

    organization = factory.SubFactory(OrganizationFactory)
    connection = factory.SubFactory(
        ByokConnectionFactory, organization=factory.SelfAttribute("..organization")
    )
    requested_by = factory.LazyAttribute(lambda o: org_admin(o.organization))
    key_alias = "alias/byok-key-management-next"


class PreflightRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "setup.PreflightRun"

    request = factory.SubFactory(SetupRequestFactory)


class ReencryptionPreflightFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "reencryption.ReencryptionPreflight"

    request = factory.SubFactory(ReencryptionRequestFactory)
