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
