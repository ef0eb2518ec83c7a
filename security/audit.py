"""Audit events of the sign-in hardening, in the shape of ``audit.signals``' sign-in events.

A person's account events go into the chain of each org they belong to (their admins see them),
or the vendor chain for staff without an org.
"""

from audit.request_context import client_ip, user_agent
from audit.services import record_event


def record_account_event(
    *,
    event_name: str,
    user,
    request,
    outcome: str = "Success",
    error_code: str = "",
    error_message: str = "",
    identity: dict | None = None,
    parameters: dict | None = None,
) -> None:
    orgs = list(user.organizations.all()) if user is not None else []
    for org in orgs or [None]:
        record_event(
            org=org,
            event_name=event_name,
            actor=user,
            user_identity=identity,
            event_type="AwsConsoleSignIn",
            source_ip=client_ip(request),
            user_agent=user_agent(request),
            request_parameters=parameters,
            response_elements={event_name: outcome},
            error_code=error_code,
            error_message=error_message,
            read_only=False,
        )
