from django.apps import AppConfig


class OrgsConfig(AppConfig):
    name = "orgs"
    verbose_name = "Organizations"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from orgs.staff_roles import sync_staff_groups_after_migrate

        # Runs after each app's post_migrate (permissions are created there), so the last
        # one leaves every group exact.
        post_migrate.connect(sync_staff_groups_after_migrate, dispatch_uid="sync_staff_groups")
