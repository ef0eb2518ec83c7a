from django.apps import AppConfig


class SecurityConfig(AppConfig):
    """Sign-in hardening: two-factor, recent authentication, throttling hooks, staff audit."""

    name = "security"
    verbose_name = "Sign-in security"

    def ready(self) -> None:
        # signals: marks the sign-in time, counts failed sign-ins (receivers by decorator).
        from security import signals, staff_audit  # noqa: F401

        staff_audit.connect()
