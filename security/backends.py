"""django-axes' lockout check as an authentication backend (first in AUTHENTICATION_BACKENDS)."""

from axes.backends import AxesStandaloneBackend


class ThrottlingBackend(AxesStandaloneBackend):
    """Refuses a sign-in while its e-mail address and IP address are locked out.

    Every HTTP sign-in in the portal (the login page, the admin, re-authentication) passes the
    request. A call without one is not an HTTP attempt (the test client's ``login()``, a shell):
    there is no client to throttle, so this backend abstains and the password backend decides,
    instead of django-axes raising an error.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
