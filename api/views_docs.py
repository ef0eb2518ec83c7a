"""The API's documentation page: Swagger UI from the sidecar package, served by the portal.

The portal's CSP allows no inline script or style: the split view loads its start-up script
from a second request, and our template drops drf-spectacular's inline ``<style>``. Swagger
UI's stylesheet draws its icons as ``data:`` SVG images: that one source is allowed here.
"""

from csp.decorators import csp_update
from django.utils.decorators import method_decorator
from drf_spectacular.views import SpectacularSwaggerSplitView


@method_decorator(csp_update({"img-src": ["data:"]}), name="dispatch")
class ApiDocs(SpectacularSwaggerSplitView):
    template_name = "api/swagger_ui.html"
    title = "BYOK Portal API v1"
