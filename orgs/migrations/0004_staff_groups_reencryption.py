from django.db import migrations

from orgs.staff_roles import sync_staff_groups


class Migration(migrations.Migration):
    dependencies = [
        ("orgs", "0003_staff_groups_data_plane"),
    ]

    operations = [migrations.RunPython(sync_staff_groups, migrations.RunPython.noop)]
