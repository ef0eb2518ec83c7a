"""The REST API's resources (``/api/v1/``). Thin: selectors to read, services to act."""

from django.db.models import prefetch_related_objects
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response

from api import serializers as s
from api import services
from api.base import ERRORS, OrgApiView, problem_response, problems
from api.models import SCOPE_KEYS_REVOKE, SCOPE_READ, SCOPE_SETUP_WRITE
from audit.request_context import client_ip
from audit.webhooks import endpoint_of
from connections import selectors as connection_selectors
from connections.services import Scope
from integrations.ingestion import source_of
from orgs.eligibility import byok_eligibility
from orgs.selectors import sites_with_apps
from reencryption import selectors as reencryption_selectors
from setup import selectors as setup_selectors
from setup import services as setup_services
from setup.forms import SetupRequestForm


@extend_schema(
    tags=["organizations"], responses={200: s.OrganizationSerializer(many=True), **ERRORS}
)
class OrganizationList(OrgApiView):
    """The organizations this token may see: its own organization."""

    def get(self, request):
        return Response(s.OrganizationSerializer([self.org], many=True).data)


@extend_schema(tags=["organizations"], responses={200: s.OrganizationSerializer, **ERRORS})
class OrganizationDetail(OrgApiView):
    def get(self, request, org_id: int):
        return Response(s.OrganizationSerializer(self.org).data)


@extend_schema(tags=["byok"], responses={200: s.ConnectionSerializer, **ERRORS})
class ConnectionDetail(OrgApiView):
    """The BYOK connection: its state and current regional keys (404 without one)."""

    required_scope = SCOPE_READ

    def get(self, request, org_id: int):
        connection = connection_selectors.connection_of(self.org)
        if connection is None:
            raise exceptions.NotFound("This organization has no BYOK connection.")
        return Response(s.ConnectionSerializer(connection).data)


class _KillSwitchView(OrgApiView):
    """The kill switch's POST, org-wide or for one scope: the same audit of a refused token,
    checks, idempotency and answer. Subclasses say how to read the body and describe the
    result."""

    operation = "RevokeKeyAccess"
    input_serializer = s.RevokeInput
    result_serializer = s.ConnectionSerializer
    success_status = status.HTTP_200_OK

    def scope_of(self, data: dict) -> Scope | None:
        return None  # the whole organization

    def check_permissions(self, request):
        try:
            super().check_permissions(request)
        except exceptions.PermissionDenied:
            if request.method == "POST":  # the org's token without keys:revoke: audited
                services.record_refused_kill_switch(
                    token=request.auth,
                    source_ip=client_ip(request._request),
                    operation=self.operation,
                )
            raise

    def post(self, request, org_id: int):
        if connection_selectors.connection_of(self.org) is None:
            raise exceptions.NotFound("This organization has no BYOK connection.")
        body = self.input_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 200:
            raise exceptions.ValidationError({"Idempotency-Key": ["At most 200 characters."]})
        try:
            answer = services.revoke_key_access_with_token(
                token=request.auth,
                reason=body.validated_data["reason"],
                source_ip=client_ip(request._request),
                idempotency_key=key,
                fingerprint=services.request_fingerprint(
                    method="POST", path=request.path, body=dict(body.data)
                ),
                describe=lambda result: dict(self.result_serializer(result).data),
                scope=self.scope_of(body.validated_data),
                success_status=self.success_status,
            )
        except services.IdempotencyConflict as exc:
            return problem_response(422, str(exc), request)
        if answer.status != self.success_status:
            response = problem_response(answer.status, answer.body["detail"], request)
        else:
            response = Response(answer.body, status=answer.status)
        if answer.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


@extend_schema(
    tags=["byok"],
    request=s.RevokeInput,
    parameters=[
        OpenApiParameter(
            "Idempotency-Key",
            str,
            OpenApiParameter.HEADER,
            description="At most 200 characters; e.g. the playbook run's ID.",
        )
    ],
    responses={200: s.ConnectionSerializer, **problems(400, 409, 415, 422), **ERRORS},
    description=(
        "The kill switch: revokes key access exactly as the BYOK page does (the same service, "
        "audit event and notices to every org admin); every BYOK app goes offline. Needs the "
        "`keys:revoke` scope. Send an `Idempotency-Key` header to make retries safe: the same "
        "key with the same body replays the first answer (`Idempotent-Replayed: true`); the "
        "same key with another body is refused with 422.\n\n"
        "**Restoring access is deliberately not in the API**: it stays in the browser, behind "
        "two-factor authentication and a recent sign-in, so a leaked token can cut access but "
        "never re-open it."
    ),
)
class RevokeKeyAccess(_KillSwitchView):
    required_scope = SCOPE_KEYS_REVOKE


class ScopedRevocationList(_KillSwitchView):
    """Scoped revocations: one site, app instance or period of data at a time."""

    required_scope = {"POST": SCOPE_KEYS_REVOKE, "*": SCOPE_READ}

    operation = "RevokeScopedKeyAccess"
    input_serializer = s.ScopedRevokeInput
    result_serializer = s.ScopedRevocationSerializer
    success_status = status.HTTP_201_CREATED

    def scope_of(self, data: dict) -> Scope:
        if data["kind"] == "site":
            return Scope.site(data["site_id"])
        if data["kind"] == "app":
            return Scope.app(data["app_id"])
        return Scope.period(data["start"], data["end"])

    @extend_schema(
        tags=["byok"], responses={200: s.ScopedRevocationSerializer(many=True), **ERRORS}
    )
    def get(self, request, org_id: int):
        revocations = connection_selectors.scoped_revocations_of(self.org)
        return Response(s.ScopedRevocationSerializer(revocations, many=True).data)

    @extend_schema(
        tags=["byok"],
        request=s.ScopedRevokeInput,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="At most 200 characters; e.g. the playbook run's ID.",
            )
        ],
        responses={
            201: s.ScopedRevocationSerializer,
            **problems(400, 404, 409, 415, 422),
            **ERRORS,
        },
        description=(
            "Scoped revocation: takes away key access of one site, one app instance, or the "
            "data written in a period (enforced through the data keys that encrypted it: the "
            "answer's `covered_from`/`covered_to` is the exact span refused), exactly as the "
            "BYOK page does; everything else of the organization keeps working. Needs the "
            "`keys:revoke` scope; `Idempotency-Key` as for the org-wide kill switch. A site or "
            "app of another organization is a 404. Restoring stays in the browser."
        ),
    )
    def post(self, request, org_id: int):
        return super().post(request, org_id)


@extend_schema(tags=["organizations"], responses={200: s.SiteSerializer(many=True), **ERRORS})
class SiteList(OrgApiView):
    """Sites and their app instances, with each instance's state and any scoped revocation
    that takes its key access away."""

    required_scope = SCOPE_READ

    def get(self, request, org_id: int):
        prefetch_related_objects([self.org], sites_with_apps())
        context = {"revoked_scopes": connection_selectors.revoked_scopes_of(self.org)}
        return Response(s.SiteSerializer(self.org.sites.all(), many=True, context=context).data)


class SetupRequestList(OrgApiView):
    required_scope = {"POST": SCOPE_SETUP_WRITE, "*": SCOPE_READ}

    @extend_schema(tags=["setup"], responses={200: s.SetupRequestSerializer(many=True), **ERRORS})
    def get(self, request, org_id: int):
        requests = setup_selectors.setup_requests_of(self.org).order_by("-created_at", "-id")
        return Response(s.SetupRequestSerializer(requests, many=True).data)

    @extend_schema(
        tags=["setup"],
        request=s.SetupRequestInput,
        responses={201: s.SetupRequestSerializer, **problems(400, 409, 415), **ERRORS},
        description="Submit a setup request (scope `setup:write`), as the setup page does.",
    )
    def post(self, request, org_id: int):
        body = s.SetupRequestInput(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        eligibility = byok_eligibility(self.org)
        if not eligibility:
            raise setup_services.RequestActionRefused(eligibility.reason)
        form = SetupRequestForm(_setup_form_data(data, request), org=self.org)
        if not form.is_valid():
            raise exceptions.ValidationError(
                {field: [str(e) for e in errors] for field, errors in form.errors.items()}
            )
        cleaned = form.cleaned_data
        req = setup_services.submit_setup_request(
            org=self.org,
            actor=request.user,
            aws_account_id=cleaned["aws_account_id"],
            site_name=cleaned["site_name"],
            location=cleaned["location"],
            apps=cleaned["apps"],
        )
        return Response(s.SetupRequestSerializer(req).data, status=status.HTTP_201_CREATED)


def _setup_form_data(data: dict, request) -> dict:
    """The page form's fields: an existing BYOK site by name, or a new site."""
    form = SetupRequestForm(org=request.auth.organization)
    existing = data["site_name"] if data["site_name"] in form.byok_sites else ""
    return {
        "aws_account_id": data["aws_account_id"],
        "existing_site": existing,
        "new_site_name": "" if existing else data["site_name"],
        "location": data["location"],
        "apps": data["apps"],
    }


@extend_schema(tags=["setup"], responses={200: s.SetupRequestSerializer, **ERRORS})
class SetupRequestDetail(OrgApiView):
    required_scope = SCOPE_READ

    def get(self, request, org_id: int, request_id: int):
        req = setup_selectors.setup_requests_of(self.org).filter(pk=request_id).first()
        if req is None:
            raise exceptions.NotFound("No such setup request.")
        return Response(s.SetupRequestSerializer(req).data)


@extend_schema(
    tags=["reencryption"], responses={200: s.ReencryptionRequestSerializer(many=True), **ERRORS}
)
class ReencryptionRequestList(OrgApiView):
    required_scope = SCOPE_READ

    def get(self, request, org_id: int):
        requests = reencryption_selectors.reencryption_requests_of(self.org)
        return Response(s.ReencryptionRequestSerializer(requests, many=True).data)


@extend_schema(tags=["reencryption"], responses={200: s.ReencryptionRequestSerializer, **ERRORS})
class ReencryptionRequestDetail(OrgApiView):
    required_scope = SCOPE_READ

    def get(self, request, org_id: int, request_id: int):
        req = (
            reencryption_selectors.reencryption_requests_of(self.org).filter(pk=request_id).first()
        )
        if req is None:
            raise exceptions.NotFound("No such re-encryption request.")
        return Response(s.ReencryptionRequestSerializer(req).data)


@extend_schema(tags=["integrations"], responses={200: s.CloudTrailSourceSerializer, **ERRORS})
class CloudTrailSourceDetail(OrgApiView):
    """Where the customer's CloudTrail is imported from (404 when not configured)."""

    required_scope = SCOPE_READ

    def get(self, request, org_id: int):
        source = source_of(self.org)
        if source is None:
            raise exceptions.NotFound("No CloudTrail source is configured.")
        return Response(s.CloudTrailSourceSerializer(source).data)


@extend_schema(tags=["integrations"], responses={200: s.WebhookEndpointSerializer, **ERRORS})
class WebhookEndpointDetail(OrgApiView):
    """The SIEM webhook (404 when not configured). Its secret is never returned."""

    required_scope = SCOPE_READ

    def get(self, request, org_id: int):
        endpoint = endpoint_of(self.org)
        if endpoint is None:
            raise exceptions.NotFound("No SIEM webhook is configured.")
        return Response(s.WebhookEndpointSerializer(endpoint).data)
