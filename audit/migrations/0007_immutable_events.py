from django.db import migrations

# PostgreSQL only: a statement trigger refuses every UPDATE and DELETE of audit events, whoever
# sends it (the ORM, raw SQL, a psql session), except a DELETE in a transaction where retention
# set ``byok.audit_retention`` to 'on' (audit.retention.allow_retention_delete). TRUNCATE is
# not covered: it needs the table owner, and the test runner's flush uses it.
CREATE_TRIGGER = """
CREATE OR REPLACE FUNCTION audit_auditevent_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('byok.audit_retention', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit events are immutable: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'Only retention deletes audit events (audit.retention).';
END
$$;
DROP TRIGGER IF EXISTS audit_auditevent_immutable ON audit_auditevent;
CREATE TRIGGER audit_auditevent_immutable
    BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_auditevent_refuse_change();
"""

DROP_TRIGGER = """
DROP TRIGGER IF EXISTS audit_auditevent_immutable ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_auditevent_refuse_change();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE_TRIGGER, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRIGGER, params=None)


class Migration(migrations.Migration):
    """Audit events cannot be changed: the base manager refuses updates (models.py), and on
    PostgreSQL the database itself refuses UPDATE and DELETE outside retention."""

    dependencies = [("audit", "0006_trail_call_matches")]

    operations = [
        migrations.AlterModelOptions(
            name="auditevent",
            options={"base_manager_name": "objects", "ordering": ["-event_time", "-id"]},
        ),
        migrations.RunPython(create_trigger, drop_trigger, elidable=False),
    ]
