"""Drop the app records' single-column index on ``app_instance_id``: the ``(app_instance, id)``
index serves every lookup by app (its leading column), and one index fewer is one write fewer
per record inserted or rotated.

Only the index goes: Django's own ``AlterField`` would also drop and re-add the foreign key,
re-validating it over the whole table under lock. On PostgreSQL the index is dropped
``CONCURRENTLY`` (writes go on meanwhile), so the migration is not atomic.
"""

import django.db.models.deletion
from django.db import migrations, models

INDEX = "dataplane_apprecord_app_instance_id_181f0537"
TABLE = "dataplane_apprecord"


def _concurrently(schema_editor) -> str:
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def drop_index(apps, schema_editor):
    schema_editor.execute(f'DROP INDEX{_concurrently(schema_editor)} IF EXISTS "{INDEX}"')


def create_index(apps, schema_editor):
    schema_editor.execute(
        f'CREATE INDEX{_concurrently(schema_editor)} IF NOT EXISTS "{INDEX}" '
        f'ON "{TABLE}" ("app_instance_id")'
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("dataplane", "0002_read_checks"),
        ("orgs", "0005_staff_groups_scoped_revocation"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="apprecord",
                    name="app_instance",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="records",
                        to="orgs.appinstance",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_index, create_index)],
        ),
    ]
