"""Sign-in events: login and logout are audited like CloudTrail's ConsoleLogin (failed
sign-ins, counted per address and window, by ``security.failed_sign_ins``)."""

from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.dispatch import receiver

from audit.request_context import client_ip, user_agent
from audit.services import record_event


def _orgs_of(user):
    if user is None:
        return [None]
    orgs = list(user.organizations.all())
    return orgs or [None]


def _record_sign_in(*, event_name, user, request, outcome, identity=None, error=""):
    for org in _orgs_of(user):
        record_event(
            org=org,
            event_name=event_name,
            actor=user,
            user_identity=identity,
            event_type="AwsConsoleSignIn",
            source_ip=client_ip(request),
            user_agent=user_agent(request),
            response_elements={event_name: outcome},
            error_code="Failed authentication" if error else "",
            error_message=error,
            read_only=False,
        )


@receiver(user_logged_in)
def record_login(sender, request, user, **kwargs):
    _record_sign_in(event_name="ConsoleLogin", user=user, request=request, outcome="Success")


@receiver(user_logged_out)
def record_logout(sender, request, user, **kwargs):
    if user is not None:
        _record_sign_in(event_name="ConsoleLogout", user=user, request=request, outcome="Success")


# Failed sign-ins are counted per address and window by security.failed_sign_ins.
