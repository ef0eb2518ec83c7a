"""``manage.py demo_api_token``: a read-only API token of Acme's admin, for ``make run`` to print.

DEBUG only (like ``seed_demo``). Customers create tokens on the API tokens page (step-up); this
shortcut exists so the demo can show one ``curl`` right away. Prints one JSON line.
"""

import json
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from api.services import create_api_token
from orgs.models import Organization, User

DEMO_ORG = "Acme Corp"
DEMO_ADMIN = "admin@acme.example"


class Command(BaseCommand):
    help = "Create a read-only API token of the demo's Acme admin and print it (DEBUG only)."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("demo_api_token prints a working token: DEBUG only.")
        org = Organization.objects.get(name=DEMO_ORG)
        token, whole = create_api_token(
            org=org,
            actor=User.objects.get(email=DEMO_ADMIN),
            name="make run demo (read-only)",
            scopes=["read", "audit:read"],
            expires_at=timezone.now() + timedelta(days=1),
        )
        self.stdout.write(json.dumps({"org_id": org.pk, "token": whole}))
