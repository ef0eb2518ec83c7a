from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from demo.seed import DEMO_USERS, seed_demo_world


def _aws() -> bool:
    from demo.acme import aws_available

    return aws_available()


class Command(BaseCommand):
    help = "Create the demo organizations, users, sites and (with a moto endpoint) AWS keys."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo creates users with a published password: DEBUG only.")
        seed_demo_world()
        from demo.acme import seed_demo_byok, seed_demo_replacement_keys

        self.stdout.write(seed_demo_byok())
        self.stdout.write(seed_demo_replacement_keys())
        if _aws():
            from demo.trail import seed_demo_trail

            self.stdout.write(seed_demo_trail())
        self.stdout.write(self.style.SUCCESS("Demo data ready. Log in with any of:"))
        for user in DEMO_USERS:
            self.stdout.write(f"  {user.email:<30} {settings.DEMO_PASSWORD}   ({user.description})")
