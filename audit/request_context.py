"""What an audit event records about the HTTP request that caused it."""


def client_ip(request) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy rewrites it.
    return (request.META.get("REMOTE_ADDR") or "") if request is not None else ""


def user_agent(request) -> str:
    return (request.META.get("HTTP_USER_AGENT") or "")[:300] if request is not None else ""
