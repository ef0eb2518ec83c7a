from django.apps import AppConfig


class SetupConfig(AppConfig):
    name = "setup"
    verbose_name = "Setup requests"

    def ready(self) -> None:
        from review.kinds import RequestKind, register
        from setup import selectors
        from setup.forms import StaffQueueFilterForm

        register(
            RequestKind(
                key="setup",
                label="Setup requests",
                queue=selectors.staff_request_queue,
                counts=selectors.staff_request_counts,
                filter_form=StaffQueueFilterForm,
            )
        )
