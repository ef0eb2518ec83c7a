from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_immutable_events")]

    operations = [
        migrations.AddField(
            model_name="ingestedfile",
            name="records_refused",
            field=models.PositiveIntegerField(
                default=0, help_text="Claimed to be the portal's own events: never imported."
            ),
        ),
    ]
