from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_errors_index")]

    operations = [
        # Existing links were hashed over json.dumps text: they keep format 1. The database
        # default is 1 too: during a rolling deploy, old code (which hashes the old way) still
        # inserts rows, and they are format 1.
        migrations.AddField(
            model_name="auditevent",
            name="hash_format",
            field=models.PositiveSmallIntegerField(default=1, db_default=1, editable=False),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="imported_from",
            field=models.CharField(blank=True, editable=False, max_length=1100),
        ),
    ]
