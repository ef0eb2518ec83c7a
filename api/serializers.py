"""What the API shows of each resource (read-only unless named ``…Input``). Never a secret:
no webhook secret, no token hash, no external ID of the role."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audit.filters import ARN_RE, REGION_RE
from core.locations import LOCATION_CHOICES
from orgs.models import AppInstance


class OrganizationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    plan = serializers.CharField()
    cloud = serializers.CharField()


class RegionalKeySerializer(serializers.Serializer):
    region = serializers.CharField()
    key_arn = serializers.CharField()
    alias = serializers.CharField()
    generation = serializers.IntegerField()
    status = serializers.CharField()
    last_checked_at = serializers.DateTimeField(allow_null=True)


class ConnectionSerializer(serializers.Serializer):
    aws_account_id = serializers.CharField()
    location = serializers.CharField()
    role_arn = serializers.CharField()
    state = serializers.CharField()
    state_reason = serializers.CharField()
    state_changed_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    restore_deadline = serializers.DateTimeField(allow_null=True)
    last_checked_at = serializers.DateTimeField(allow_null=True)
    keys = serializers.SerializerMethodField()

    @extend_schema_field(RegionalKeySerializer(many=True))
    def get_keys(self, connection) -> list[dict]:
        keys = [k for k in connection.keys.all() if k.is_current]
        return RegionalKeySerializer(keys, many=True).data


class AppInstanceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    app = serializers.CharField()
    encryption = serializers.CharField()
    status = serializers.CharField()
    status_reason = serializers.CharField()
    scoped_revocation_id = serializers.SerializerMethodField(
        help_text="The scoped revocation that takes this app's key access away on its own "
        "(the app, or its site); null when none does."
    )

    def get_scoped_revocation_id(self, app) -> int | None:
        revoked = self.context.get("revoked_scopes") or {"sites": {}, "apps": {}}
        return revoked["apps"].get(app.pk) or revoked["sites"].get(app.site_id)


class SiteSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    scoped_revocation_id = serializers.SerializerMethodField(
        help_text="The scoped revocation of the whole site; null when none."
    )
    app_instances = AppInstanceSerializer(many=True)

    def get_scoped_revocation_id(self, site) -> int | None:
        revoked = self.context.get("revoked_scopes") or {"sites": {}}
        return revoked["sites"].get(site.pk)


class SetupRequestSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    aws_account_id = serializers.CharField()
    site_name = serializers.CharField()
    location = serializers.CharField()
    apps = serializers.ListField(child=serializers.CharField())
    rejection_reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    closed_at = serializers.DateTimeField(allow_null=True)


class SetupRequestInput(serializers.Serializer):
    """Submit a setup request: the page's form (``setup.forms.SetupRequestForm``) checks it."""

    aws_account_id = serializers.CharField(max_length=40)
    site_name = serializers.CharField(
        max_length=100, help_text="A new site's name, or one of your BYOK sites to add apps to."
    )
    location = serializers.ChoiceField(choices=LOCATION_CHOICES)
    apps = serializers.ListField(
        child=serializers.ChoiceField(choices=AppInstance.App.choices), min_length=1, max_length=3
    )


class ReencryptionRequestSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    mode = serializers.CharField()
    key_source = serializers.CharField()
    key_alias = serializers.CharField()
    key_arns = serializers.DictField(child=serializers.CharField())
    scheduled_for = serializers.DateTimeField(allow_null=True)
    approved_at = serializers.DateTimeField(allow_null=True)
    rejection_reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    closed_at = serializers.DateTimeField(allow_null=True)


class CloudTrailSourceSerializer(serializers.Serializer):
    bucket = serializers.CharField()
    prefix = serializers.CharField()
    region = serializers.CharField()
    scope = serializers.CharField()
    enabled = serializers.BooleanField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    last_success_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField()


class WebhookEndpointSerializer(serializers.Serializer):
    """The SIEM webhook; its signing secret is never returned (only when it was set)."""

    url = serializers.CharField()
    enabled = serializers.BooleanField()
    secret_set_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class RevokeInput(serializers.Serializer):
    reason = serializers.CharField(
        max_length=500, help_text="Why key access is revoked; recorded in the audit log."
    )


class ScopedRevocationSerializer(serializers.Serializer):
    """One site, app instance or period of data whose key access was revoked on its own."""

    id = serializers.IntegerField()
    kind = serializers.CharField(help_text="`site`, `app` or `period`.")
    site_id = serializers.IntegerField(allow_null=True)
    app_instance_id = serializers.IntegerField(allow_null=True)
    period_from = serializers.DateTimeField(allow_null=True)
    period_to = serializers.DateTimeField(allow_null=True)
    covered_from = serializers.DateTimeField(
        allow_null=True,
        help_text="A period revokes whole data keys (one per app, replaced about daily): the "
        "span of data actually refused, which contains the requested period.",
    )
    covered_to = serializers.DateTimeField(allow_null=True)
    state = serializers.CharField()
    source = serializers.CharField(help_text="`portal` or `customer-aws` (a key-policy Deny).")
    reason = serializers.CharField()
    revoked_at = serializers.DateTimeField()
    restore_deadline = serializers.DateTimeField()
    restored_at = serializers.DateTimeField(allow_null=True)


class ScopedRevokeInput(serializers.Serializer):
    """What to revoke: a site (``site_id``), an app instance (``app_id``) or a period of data
    (``start`` and ``end``, UTC; the end at the latest now)."""

    FIELDS_OF_KIND = {"site": ("site_id",), "app": ("app_id",), "period": ("start", "end")}

    kind = serializers.ChoiceField(choices=sorted(FIELDS_OF_KIND))
    site_id = serializers.IntegerField(required=False, min_value=1)
    app_id = serializers.IntegerField(required=False, min_value=1)
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    reason = serializers.CharField(
        max_length=500, help_text="Why key access is revoked; recorded in the audit log."
    )

    def validate(self, data):
        wanted = self.FIELDS_OF_KIND[data["kind"]]
        errors = {name: ["Required for this kind of scope."] for name in wanted if name not in data}
        for other in {f for fields in self.FIELDS_OF_KIND.values() for f in fields} - set(wanted):
            if other in data:
                errors[other] = [f"Not part of a {data['kind']} scope."]
        if errors:
            raise serializers.ValidationError(errors)
        return data


class AuditEventPage(serializers.Serializer):
    """A page of audit events, each its CloudTrail record, newest first."""

    Records = serializers.ListField(child=serializers.DictField())
    next_cursor = serializers.CharField(
        allow_null=True, help_text="Pass as ``cursor`` for the next (older) page; null: last page."
    )


class AuditQuery(serializers.Serializer):
    """The audit page's filters as strict query parameters (the page's form then checks them
    as on the page): present means not empty, a boolean is true or false."""

    locals()["from"] = serializers.DateTimeField(
        required=False, help_text="Events at or after this time (UTC)."
    )
    locals()["to"] = serializers.DateTimeField(
        required=False, help_text="Events at or before this time (UTC)."
    )
    event_name = serializers.CharField(
        required=False, min_length=1, max_length=100, help_text="Exact, e.g. Decrypt."
    )
    event_source = serializers.CharField(
        required=False, min_length=1, max_length=100, help_text="Exact, e.g. kms.amazonaws.com."
    )
    principal = serializers.CharField(
        required=False, min_length=1, max_length=300, help_text="An e-mail address, role ARN …"
    )
    resource = serializers.RegexField(
        ARN_RE.pattern, required=False, max_length=300, help_text="The full ARN of a KMS key."
    )
    region = serializers.RegexField(
        REGION_RE.pattern, required=False, max_length=30, help_text="An AWS region, or global."
    )
    request_id = serializers.CharField(required=False, min_length=1, max_length=100)
    errors_only = serializers.BooleanField(required=False, default=False)


class AuditPageQuery(AuditQuery):
    cursor = serializers.CharField(
        required=False, min_length=1, max_length=200, help_text="``next_cursor`` of a page."
    )
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)


class AuditExportQuery(AuditQuery):
    format = serializers.ChoiceField(choices=["json", "csv"], required=False, default="json")
