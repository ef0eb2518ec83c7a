from django.db import migrations

from orgs.staff_roles import sync_staff_groups


class Migration(migrations.Migration):
    """Support staff may look API tokens up (read-only admin; never the hash)."""

    dependencies = [
        ("api", "0001_initial"),
        ("orgs", "0004_staff_groups_reencryption"),
    ]

    operations = [migrations.RunPython(sync_staff_groups, migrations.RunPython.noop)]
