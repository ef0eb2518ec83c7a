from django.apps import AppConfig


class DataPlaneConfig(AppConfig):
    name = "dataplane"
    verbose_name = "Data plane"

    def ready(self) -> None:
        from dataplane import receivers

        receivers.connect()
