from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Audit integrations"

    def ready(self) -> None:
        from audit.selectors import unexplained_call_banners
        from orgs.context_processors import register_banner

        # The alert of calls with the vendor's role the portal has no record of
        # (integrations.reconcile), on every page of the org's admins until acknowledged.
        register_banner("unexplained_call_banners", unexplained_call_banners)
