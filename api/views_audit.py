"""Audit events over the API: the audit page's filters, cursor pages, CloudTrail JSON, export."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.response import Response

from api import serializers as s
from api.base import ERRORS, OrgApiView, problems
from api.models import SCOPE_AUDIT_READ
from audit import export, selectors
from audit.filters import AuditFilterForm
from audit.pagination import InvalidCursor, decode_cursor, keyset_page
from audit.request_context import client_ip, user_agent

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

FILTER_PARAMETERS = [
    OpenApiParameter("from", OpenApiTypes.DATETIME, description="Events at or after (UTC)."),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description="Events at or before (UTC)."),
    OpenApiParameter("event_name", str, description="Exact, e.g. Decrypt."),
    OpenApiParameter("event_source", str, description="Exact, e.g. kms.amazonaws.com."),
    OpenApiParameter("principal", str, description="An e-mail address, role ARN or service."),
    OpenApiParameter("resource", str, description="The full ARN of one of your KMS keys."),
    OpenApiParameter("region", str, description="An AWS region code, or global."),
    OpenApiParameter("request_id", str),
    OpenApiParameter("errors_only", bool),
]


def _filters(request):
    form = AuditFilterForm(request.query_params)
    if not form.is_valid():
        raise exceptions.ValidationError(
            {field: [str(e) for e in errors] for field, errors in form.errors.items()}
        )
    return form.filters()


def _limit(request) -> int:
    raw = request.query_params.get("limit", "")
    if not raw:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise exceptions.ValidationError({"limit": [f"A number from 1 to {MAX_LIMIT}."]})
    return int(raw)


@extend_schema(
    tags=["audit"],
    parameters=[
        *FILTER_PARAMETERS,
        OpenApiParameter("cursor", str, description="`next_cursor` of the previous page."),
        OpenApiParameter("limit", int, description=f"1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})."),
    ],
    responses={200: s.AuditEventPage, **problems(400), **ERRORS},
    description="The organization's audit events, newest first, each its CloudTrail record "
    "(scope `audit:read`). The filters are the audit page's.",
)
class AuditEventList(OrgApiView):
    required_scope = SCOPE_AUDIT_READ

    def get(self, request, org_id: int):
        filters = _filters(request)
        limit = _limit(request)
        cursor = request.query_params.get("cursor", "")
        try:
            after = decode_cursor(cursor) if cursor else None
        except InvalidCursor as exc:
            raise exceptions.ValidationError({"cursor": [str(exc)]}) from exc
        events = selectors.search_events(org=self.org, filters=filters)
        page = keyset_page(events, size=limit, after=after)
        return Response(
            {"Records": [e.record for e in page.items], "next_cursor": page.older_cursor}
        )


class AuditEventDetail(OrgApiView):
    required_scope = SCOPE_AUDIT_READ

    @extend_schema(
        tags=["audit"],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, "The CloudTrail record."), **ERRORS},
    )
    def get(self, request, org_id: int, event_id):
        return Response(selectors.get_event(org=self.org, event_id=event_id).record)


@extend_schema(
    tags=["audit"],
    parameters=[
        *FILTER_PARAMETERS,
        OpenApiParameter("format", str, enum=sorted(export.FORMATS), default="json"),
    ],
    responses={
        (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, "The JSON export."),
        (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, "The CSV export."),
        **problems(400),
        **ERRORS,
    },
    description="The audit page's export, streamed: JSON (with the chain links and signed "
    "digests, verifiable offline) or CSV. The export is itself an audit event.",
)
class AuditExport(OrgApiView):
    required_scope = SCOPE_AUDIT_READ

    def get(self, request, org_id: int):
        fmt = request.query_params.get("format", "json")
        if fmt not in export.FORMATS:
            raise exceptions.ValidationError({"format": ["Use json or csv."]})
        filters = _filters(request)
        return export.export_response(
            org=self.org,
            filters=filters,
            fmt=fmt,
            actor=request.user,
            source_ip=client_ip(request._request),
            user_agent=user_agent(request._request),
        )
