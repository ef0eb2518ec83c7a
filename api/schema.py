"""drf-spectacular's description of the token authentication (loaded in ``ApiConfig.ready``)."""

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.ApiTokenAuthentication"
    name = "orgApiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "byok_<prefix>_<secret>",
            "description": "An org API token, created by an org admin on the API tokens page.",
        }


class ApiAutoSchema(AutoSchema):
    """Operation IDs from the view's name (``SetupRequestList`` + POST → ``createSetupRequest``
    is not guessed; ``setup_request_list_post`` is stable and unique)."""

    def get_operation_id(self):
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(self.view).__name__).lower()
        return f"{name}_{self.method.lower()}"


#: OpenAPI links (operation → the operations its answer leads to), for clients and for
#: schemathesis' stateful tests: a submitted setup request can be read back by its id, an audit
#: page leads to the next page and to each event.
LINKS = {
    ("/api/v1/orgs/{org_id}/setup-requests", "post", "201"): {
        "ReadSetupRequest": {
            "operationId": "setup_request_detail_get",
            "parameters": {"org_id": "$request.path.org_id", "request_id": "$response.body#/id"},
        }
    },
    ("/api/v1/orgs/{org_id}/audit/events", "get", "200"): {
        "NextAuditPage": {
            "operationId": "audit_event_list_get",
            "parameters": {
                "org_id": "$request.path.org_id",
                "cursor": "$response.body#/next_cursor",
            },
        },
        "ReadFirstAuditEvent": {
            "operationId": "audit_event_detail_get",
            "parameters": {
                "org_id": "$request.path.org_id",
                "event_id": "$response.body#/Records/0/eventID",
            },
        },
    },
}


def add_links(result, generator, request, public):
    """drf-spectacular ``POSTPROCESSING_HOOKS`` entry: the links above."""
    for (path, method, status), links in LINKS.items():
        response = result["paths"][path][method]["responses"][status]
        response["links"] = links
    return result
