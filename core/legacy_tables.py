"""Moving models out of the first wave's ``keys`` app without losing a row.

Each new app's first migration declares its models (state only), then runs
``adopt_or_create``: on a database built by the old migrations it renames the ``keys_*``
table to the new app's table (rows, indexes, constraints and foreign keys stay as they are);
on a new database it creates the table. Content types move with their models, so
permissions, staff groups and admin history keep pointing at the same rows.
"""

from django.db import migrations


def adopt_or_create(app_label: str, model_names: list[str]):
    """A ``RunPython`` operation adopting ``keys_<model>`` tables for ``app_label``'s models."""

    def forwards(apps, schema_editor):
        connection = schema_editor.connection
        existing = set(connection.introspection.table_names())
        for name in model_names:
            model = apps.get_model(app_label, name)
            legacy = f"keys_{name.lower()}"
            if legacy in existing:
                schema_editor.alter_db_table(model, legacy, model._meta.db_table)
            else:
                schema_editor.create_model(model)
        ContentType = apps.get_model("contenttypes", "ContentType")
        for name in model_names:
            legacy = ContentType.objects.filter(app_label="keys", model=name.lower())
            if not ContentType.objects.filter(app_label=app_label, model=name.lower()).exists():
                legacy.update(app_label=app_label)

    def backwards(apps, schema_editor):
        for name in reversed(model_names):
            schema_editor.delete_model(apps.get_model(app_label, name))

    return migrations.RunPython(forwards, backwards)


def forget_legacy_app(apps, schema_editor):
    """Drop the ``keys`` app's rows from the migration history once every model has moved."""
    schema_editor.connection.cursor().execute(
        "DELETE FROM django_migrations WHERE app = %s", ["keys"]
    )
