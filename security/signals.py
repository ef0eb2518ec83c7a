"""Sign-in hooks: remember when (and whether with two-factor) the session signed in; audit
lockouts."""

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from security import session as auth_session
from security.audit import record_account_event
from security.mfa import confirmed_device


@receiver(user_logged_in, dispatch_uid="security_mark_sign_in")
def mark_sign_in(sender, request, user, **kwargs):
    if request is None or not hasattr(request, "session"):
        return
    auth_session.mark_authenticated(request)
    auth_session.set_enrolled(request, confirmed_device(user) is not None)


@receiver(user_locked_out, dispatch_uid="security_audit_lockout")
def audit_lockout(sender, request=None, username=None, ip_address=None, **kwargs):
    email = (username or "")[:254]
    user = get_user_model().objects.filter(email__iexact=email).first() if email else None
    record_account_event(
        event_name="ConsoleLogin",
        user=user,
        request=request,
        outcome="Failure",
        error_code="AccountLocked",
        error_message="Too many failed sign-in attempts: sign-in refused until the lock ends.",
        identity={"type": "PortalUser", "userName": email} if email else {"type": "Unknown"},
    )
