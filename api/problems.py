"""RFC 9457 problem details (``application/problem+json``) for every error the API answers.

DRF's exceptions, Django's 404 and permission errors and the portal's domain errors
(``core.errors``) all become ``{type, title, status, detail, instance}``; validation errors add
``errors`` (field → messages). Outside DRF views (an unknown ``/api/`` URL, a crash) the root
URLconf's 404/500 handlers answer the same way for ``/api/`` paths.
"""

import json

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import NotAllowed, NotFound

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://byok.vendor.example/problems/"
API_PREFIX = "/api/"

TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Not allowed in this state",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Server error",
}
TYPES = {
    400: "bad-request",
    401: "not-authenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "not-allowed",
    415: "unsupported-media-type",
    422: "unprocessable",
    429: "rate-limited",
    500: "server-error",
}


def instance_of(request) -> str:
    """The occurrence: the request's ID (``X-Request-ID``, on every log line of it), not its
    URL, which would echo whatever ids the caller sent."""
    request_id = getattr(request, "request_id", "") if request is not None else ""
    return f"urn:byok-portal:request:{request_id}" if request_id else ""


def problem(status_code: int, detail: str, *, instance: str = "", **extra) -> dict:
    body = {
        "type": PROBLEM_BASE + TYPES.get(status_code, "error"),
        "title": TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def _detail_text(detail) -> str:
    if isinstance(detail, list):
        return " ".join(_detail_text(item) for item in detail)
    if isinstance(detail, dict):
        return " ".join(f"{key}: {_detail_text(value)}" for key, value in detail.items())
    return str(detail)


def exception_handler(exc, context):
    """DRF's ``EXCEPTION_HANDLER``: every handled error as problem+json."""
    if isinstance(exc, NotFound):
        exc = exceptions.NotFound(str(exc))
    elif isinstance(exc, NotAllowed):
        exc = exceptions.APIException(str(exc))
        exc.status_code = status.HTTP_409_CONFLICT
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a crash: Django's 500 handler answers (problem+json under /api/)
    request = context.get("request")
    extra = {}
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
        extra["errors"] = {key: [str(m) for m in value] for key, value in exc.detail.items()}
    body = problem(
        response.status_code,
        _detail_text(getattr(exc, "detail", str(exc))),
        instance=instance_of(request),
        **extra,
    )
    headers = {k: v for k, v in response.items() if k.lower() != "content-type"}
    answer = Response(body, status=response.status_code, headers=headers)
    answer.content_type = PROBLEM_CONTENT_TYPE
    return answer


def problem_response(status_code: int, detail: str, *, request=None) -> HttpResponse:
    body = problem(status_code, detail, instance=instance_of(request))
    return HttpResponse(json.dumps(body), status=status_code, content_type=PROBLEM_CONTENT_TYPE)


def page_not_found(request, exception):
    """The root URLconf's ``handler404``: problem+json under ``/api/``, the page elsewhere."""
    if request.path_info.startswith(API_PREFIX):
        return problem_response(404, "Not found.", request=request)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """The root URLconf's ``handler500``: no detail ever (it would be the crash)."""
    if request.path_info.startswith(API_PREFIX):
        return problem_response(500, "Something went wrong; it has been logged.", request=request)
    return defaults.server_error(request)
