"""Audit events over the API: the audit page's filters, cursor pages, CloudTrail JSON, export."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.response import Response

from api import serializers as s
from api.base import ERRORS, OrgApiView, problems
from api.models import SCOPE_AUDIT_READ
from audit import export, selectors
from audit.filters import AuditFilterForm
from audit.pagination import InvalidCursor, decode_cursor, keyset_page
from audit.request_context import client_ip, user_agent


def _query(request, serializer_class) -> tuple[dict, object]:
    """The strict query parameters, then the audit page's own form over the same values."""
    # A plain dict, not the QueryDict: DRF would read an empty HTML-form value as "absent".
    query = serializer_class(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    filter_names = set(s.AuditQuery().fields)
    form = AuditFilterForm({k: v for k, v in request.query_params.items() if k in filter_names})
    if not form.is_valid():
        raise exceptions.ValidationError(
            {field: [str(e) for e in errors] for field, errors in form.errors.items()}
        )
    return query.validated_data, form.filters()


@extend_schema(
    tags=["audit"],
    parameters=[s.AuditPageQuery],
    responses={200: s.AuditEventPage, **problems(400), **ERRORS},
    description="The organization's audit events, newest first, each its CloudTrail record "
    "(scope `audit:read`). The filters are the audit page's.",
)
class AuditEventList(OrgApiView):
    required_scope = SCOPE_AUDIT_READ
    query_serializer = s.AuditPageQuery

    def get(self, request, org_id: int):
        query, filters = _query(request, s.AuditPageQuery)
        try:
            after = decode_cursor(query["cursor"]) if query.get("cursor") else None
        except InvalidCursor as exc:
            raise exceptions.ValidationError({"cursor": [str(exc)]}) from exc
        events = selectors.search_events(org=self.org, filters=filters)
        page = keyset_page(events, size=query["limit"], after=after)
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
    parameters=[s.AuditExportQuery],
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
    query_serializer = s.AuditExportQuery

    def get(self, request, org_id: int):
        query, filters = _query(request, s.AuditExportQuery)
        return export.export_response(
            org=self.org,
            filters=filters,
            fmt=query["format"],
            actor=request.user,
            source_ip=client_ip(request._request),
            user_agent=user_agent(request._request),
        )
