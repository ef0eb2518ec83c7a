from django.apps import AppConfig


class SecurityConfig(AppConfig):
    """Sign-in hardening: two-factor, recent authentication, throttling hooks."""

    name = "security"
    verbose_name = "Sign-in security"

    def ready(self) -> None:
        from security import signals  # noqa: F401  (marks sign-in time, audits lockouts)
