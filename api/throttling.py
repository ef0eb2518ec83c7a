"""Per-token rate limits (the cache of ``settings.CACHES``, keyed by the token's prefix).

Requests without a valid token count per client address (``api_anon``): the docs, the schema,
and failed authentications. The rates are ``settings.API_RATE_LIMITS``, read on each request.
"""

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from audit.request_context import client_ip


class ApiTokenRateThrottle(SimpleRateThrottle):
    def __init__(self):
        pass  # the rate is chosen per request (allow_request), so settings overrides apply

    def allow_request(self, request, view):
        token = getattr(request, "auth", None)
        if token is None:
            self.scope, self.ident = "api_anon", client_ip(request._request)
        else:
            self.scope, self.ident = "api_token", token.prefix  # unique, never reused
        self.rate = settings.API_RATE_LIMITS[self.scope]
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.ident}
