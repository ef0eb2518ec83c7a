"""Sign-in hooks: remember when (and whether with two-factor) the session signed in; count
failed sign-ins (lockouts included) into the audit log."""

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from security import failed_sign_ins
from security import session as auth_session
from security.mfa import confirmed_device
from security.throttling import username_of


@receiver(user_logged_in, dispatch_uid="security_mark_sign_in")
def mark_sign_in(sender, request, user, **kwargs):
    if request is None or not hasattr(request, "session"):
        return
    auth_session.mark_authenticated(request)
    auth_session.set_enrolled(request, confirmed_device(user) is not None)


@receiver(user_login_failed, dispatch_uid="security_count_failed_sign_in")
def count_failed_sign_in(sender, credentials, request=None, **kwargs):
    """Every wrong password (sign-in, re-authentication, revoke, restore, password change) and
    every attempt refused by a lockout.

    django-axes' own receiver runs first (``axes`` is before ``security`` in INSTALLED_APPS) and
    sets ``request.axes_locked_out`` when this attempt hit or started a lockout. Never record
    the attempted password; Django already masks it in ``credentials``.
    """
    failed_sign_ins.record_failure(
        event_name=failed_sign_ins.SIGN_IN,
        username=username_of(request, credentials),
        request=request,
        locked_out=bool(getattr(request, "axes_locked_out", False)),
    )
