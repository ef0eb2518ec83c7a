from django.db import migrations

from orgs.staff_roles import sync_staff_groups


class Migration(migrations.Migration):
    dependencies = [
        ("orgs", "0001_initial"),
        ("audit", "0002_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(sync_staff_groups, migrations.RunPython.noop)]
