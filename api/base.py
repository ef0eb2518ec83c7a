"""The base of every API view: the token's organization only, its scopes, ETags.

Tenant isolation is decided before anything else of the view runs: an ``org_id`` in the URL
that is not the token's organization is a 404, whatever the token's scopes (the same answer
as an organization that does not exist). Then the view's ``required_scope``: 403 without it.
"""

import hashlib

from django.http import HttpResponseNotModified
from django.utils.cache import patch_vary_headers
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from api.problems import PROBLEM_CONTENT_TYPE, instance_of, problem


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details."""

    type = serializers.URLField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    instance = serializers.CharField(required=False)
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False
    )


PROBLEM = OpenApiResponse(ProblemSerializer, description="A problem (RFC 9457).")


def problems(*codes: int) -> dict:
    """extend_schema ``responses`` entries: each status as ``application/problem+json``."""
    return {(code, PROBLEM_CONTENT_TYPE): PROBLEM for code in codes}


ERRORS = problems(401, 403, 404, 406, 429)


class OrgApiView(APIView):
    #: The scope a token needs for this view (or per method: ``{"POST": …}``, the rest
    #: ``"*"``); ``None``: any valid token of the organization.
    required_scope: str | dict[str, str] | None = None
    #: The query parameters the view reads; any other is a 400 (a typo never widens a filter).
    query_serializer = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        known = set(self.query_serializer().fields) if self.query_serializer else set()
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            raise exceptions.ValidationError(
                {name[:50]: ["Unknown query parameter."] for name in unknown[:10]}
            )

    def check_permissions(self, request):
        super().check_permissions(request)  # IsAuthenticated: 401 without a valid token
        token = request.auth
        org_id = self.kwargs.get("org_id")
        if org_id is not None and int(org_id) != token.organization_id:
            raise exceptions.NotFound("No such organization.")
        self.org = token.organization
        scope = self.required_scope
        if isinstance(scope, dict):
            scope = scope.get(request.method, scope.get("*"))
        if scope and not token.has_scope(scope):
            raise exceptions.PermissionDenied(f"This token does not have the {scope!r} scope.")

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if request.method in ("GET", "HEAD") and response.status_code == 200:
            response = with_etag(request, response)
        response.setdefault("Cache-Control", "private, no-cache")
        return response


def with_etag(request, response):
    """A strong ETag of the body; ``If-None-Match`` naming it answers 304 without the body."""
    if getattr(response, "streaming", False):
        return response
    response.render()
    etag = '"' + hashlib.sha256(response.content).hexdigest()[:32] + '"'
    response["ETag"] = etag
    patch_vary_headers(response, ["Authorization"])
    wanted = request.headers.get("If-None-Match", "")
    tags = [tag.strip().removeprefix("W/") for tag in wanted.split(",")]
    if wanted.strip() == "*" or etag in tags:
        not_modified = HttpResponseNotModified()
        not_modified["ETag"] = etag
        not_modified["Vary"] = response["Vary"]
        not_modified["Cache-Control"] = "private, no-cache"
        return not_modified
    return response


def problem_response(status_code: int, detail: str, request) -> Response:
    response = Response(
        problem(status_code, detail, instance=instance_of(request)), status=status_code
    )
    response.content_type = PROBLEM_CONTENT_TYPE
    return response
