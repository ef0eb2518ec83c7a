from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    name = "connections"
    verbose_name = "BYOK connections"

    def ready(self) -> None:
        from connections.selectors import revocation_banners
        from orgs.context_processors import register_banner

        # The portal-wide banner for the org admins of an org whose key access is revoked.
        register_banner("byok_revoked_banners", revocation_banners)
