from django.db import migrations, models


class Migration(migrations.Migration):
    """Failed sign-ins counted per address and window (security.failed_sign_ins)."""

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="FailureTally",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("event_name", models.CharField(max_length=40)),
                ("username", models.CharField(blank=True, max_length=254)),
                ("reported_window", models.DateTimeField(blank=True, null=True)),
                ("pending", models.PositiveIntegerField(default=0)),
                (
                    "pending_locked_out",
                    models.PositiveIntegerField(
                        default=0,
                        help_text="Of the pending failures, those refused or caused by a lockout.",
                    ),
                ),
                ("first_pending_at", models.DateTimeField(blank=True, null=True)),
                ("last_pending_at", models.DateTimeField(blank=True, null=True)),
                ("source_ips", models.JSONField(blank=True, default=list)),
                ("user_agent", models.CharField(blank=True, max_length=300)),
            ],
            options={
                "indexes": [
                    models.Index(
                        condition=models.Q(("pending__gt", 0)),
                        fields=["reported_window"],
                        name="failuretally_pending",
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("username", "event_name"), name="failuretally_once"
                    )
                ],
            },
        ),
    ]
