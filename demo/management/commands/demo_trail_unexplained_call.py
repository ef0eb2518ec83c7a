from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Demo: add a call with Acme's BYOK role that the portal never made to Acme's CloudTrail "
        "(in the moto server of `make run`) and import it: it shows as unexplained and raises "
        "the alert (audit event, e-mail, banner, webhook)."
    )

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("demo_trail_unexplained_call writes demo data: DEBUG only.")
        from demo.acme import aws_available
        from demo.trail import write_unexplained_call

        if not aws_available():
            raise CommandError(
                "No AWS endpoint: run this beside `make run`, with its moto server, e.g. "
                "DEBUG=1 AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=testing "
                "AWS_SECRET_ACCESS_KEY=testing .venv/bin/python manage.py "
                "demo_trail_unexplained_call"
            )
        try:
            self.stdout.write(write_unexplained_call())
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                "Sign in as admin@acme.example: the banner and the audit page show the alert."
            )
        )
