from django.apps import AppConfig


class ReencryptionConfig(AppConfig):
    name = "reencryption"
    verbose_name = "Re-encryption"

    def ready(self) -> None:
        from reencryption import receivers, selectors
        from review.kinds import RequestKind, register

        register(
            RequestKind(
                key="reencryption",
                label="Re-encryption requests",
                queue=selectors.staff_reencryption_queue,
                counts=selectors.staff_reencryption_counts,
            )
        )
        receivers.connect()
