from django.db import migrations

from orgs.staff_roles import sync_staff_groups


class Migration(migrations.Migration):
    dependencies = [
        ("orgs", "0004_staff_groups_reencryption"),
        ("connections", "0003_scoped_revocation"),
    ]

    operations = [migrations.RunPython(sync_staff_groups, migrations.RunPython.noop)]
