"""Customers, their people, their cloud sites and the app instances on them."""

from django.contrib.auth.models import (
    AbstractBaseUser,
    BaseUserManager,
    Permission,
    PermissionsMixin,
)
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

SITE_NAME_VALIDATOR = RegexValidator(
    regex=r"^[a-z0-9](?:[a-z0-9-]{1,61})[a-z0-9]$",
    message=(
        "Use 3 to 63 characters: lowercase letters, digits and hyphens, "
        "starting and ending with a letter or digit."
    ),
)


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **extra):
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email, password=None, **extra):
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create_user(email, password, **extra)

    def get_by_natural_key(self, username):
        return self.get(email__iexact=username)


class User(AbstractBaseUser, PermissionsMixin):
    """A person: customer (org admin / member) or vendor staff. Logs in with an e-mail address."""

    email = models.EmailField("e-mail address", unique=True)
    full_name = models.CharField(max_length=150, blank=True)
    is_staff = models.BooleanField(
        default=False, help_text="Vendor staff: may log in to the staff pages and the admin."
    )
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        constraints = [models.UniqueConstraint(Lower("email"), name="user_email_ci_unique")]

    def __str__(self) -> str:
        return self.email

    def save(self, *args, **kwargs):
        # One spelling per address: logins and uniqueness are case-insensitive.
        self.email = (self.email or "").strip().lower()
        super().save(*args, **kwargs)

    def get_full_name(self) -> str:
        return self.full_name or self.email

    def get_short_name(self) -> str:
        return self.full_name.split(" ")[0] if self.full_name else self.email

    def has_any_permission(self, *, cached: bool = True) -> bool:
        """Whether any permission reaches the user, directly or through a group: one query,
        kept on the instance (one request). Customers have none: only the vendor's staff
        groups grant permissions (``orgs.staff_roles``), and each of them grants some."""
        answer = self.__dict__.get("_has_any_permission") if cached else None
        if answer is None:
            answer = Permission.objects.filter(Q(user=self.pk) | Q(group__user=self.pk)).exists()
            self.__dict__["_has_any_permission"] = answer
        return answer

    def _in_staff_group(self, name: str) -> bool:
        # Every staff group grants permissions: without any, the user is in none of them,
        # and the group query (on every page, for the header's links) is skipped.
        return self.has_any_permission() and self.groups.filter(name=name).exists()

    @property
    def is_account_rep(self) -> bool:
        return self.is_active and (self.is_superuser or self._in_staff_group(ACCOUNT_REPS_GROUP))

    @property
    def is_support_staff(self) -> bool:
        return self.is_active and (self.is_superuser or self._in_staff_group(SUPPORT_STAFF_GROUP))


from orgs.staff_roles import ACCOUNT_REPS as ACCOUNT_REPS_GROUP  # noqa: E402
from orgs.staff_roles import SUPPORT_STAFF as SUPPORT_STAFF_GROUP  # noqa: E402


class Organization(models.Model):
    class Plan(models.TextChoices):
        FREE = "free", "Free"
        STANDARD = "standard", "Standard"
        PREMIUM = "premium", "Premium"
        ENTERPRISE = "enterprise", "Enterprise"
        ENTERPRISE_TRIAL = "enterprise-trial", "Enterprise trial"

    class Cloud(models.TextChoices):
        COMMERCIAL = "commercial", "Commercial cloud"
        GOVERNMENT = "government", "Government Cloud"

    name = models.CharField(max_length=200, unique=True)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.STANDARD)
    cloud = models.CharField(max_length=20, choices=Cloud.choices, default=Cloud.COMMERCIAL)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(User, through="Membership", related_name="organizations")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    plan__in=["free", "standard", "premium", "enterprise", "enterprise-trial"]
                ),
                name="org_plan_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(cloud__in=["commercial", "government"]), name="org_cloud_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Organization admin"
        MEMBER = "member", "Member"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="membership_unique"),
            models.CheckConstraint(
                condition=models.Q(role__in=["admin", "member"]), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} — {self.get_role_display()} of {self.organization}"


class Site(models.Model):
    """A cloud site (``<name>.vendor.example``); its name is unique across all customers."""

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="sites")
    name = models.CharField(max_length=63, unique=True, validators=[SITE_NAME_VALIDATOR])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(name__regex=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"),
                name="site_name_format",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_byok(self) -> bool:
        return any(i.encryption == AppInstance.Encryption.BYOK for i in self.app_instances.all())


class AppInstance(models.Model):
    class App(models.TextChoices):
        JIRA = "jira", "Jira"
        CONFLUENCE = "confluence", "Confluence"
        JSM = "jsm", "Jira Service Management"

    class Encryption(models.TextChoices):
        VENDOR_MANAGED = "vendor-managed", "Vendor-managed keys"
        BYOK = "byok", "Your own key (BYOK)"

    class Status(models.TextChoices):
        PROVISIONING = "provisioning", "Provisioning"
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="app_instances")
    app = models.CharField(max_length=20, choices=App.choices)
    encryption = models.CharField(
        max_length=20, choices=Encryption.choices, default=Encryption.VENDOR_MANAGED
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROVISIONING)
    status_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["site__name", "app"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "app"], name="appinstance_one_per_app_per_site"
            ),
            models.CheckConstraint(
                condition=models.Q(app__in=["jira", "confluence", "jsm"]),
                name="appinstance_app_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(encryption__in=["vendor-managed", "byok"]),
                name="appinstance_encryption_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=["provisioning", "active", "suspended"]),
                name="appinstance_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_app_display()} on {self.site}"

    @property
    def organization(self) -> Organization:
        return self.site.organization
