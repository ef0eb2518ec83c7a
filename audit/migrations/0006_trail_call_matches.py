import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """The reconciliation of the vendor's calls with the customer's trail (TrailCallMatch), and
    the index that counts the vendor's recorded calls per day."""

    dependencies = [
        ("audit", "0005_hash_format_provenance"),
        ("orgs", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="TrailCallMatch",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("request_id", models.CharField(blank=True, max_length=100)),
                ("event_name", models.CharField(max_length=100)),
                (
                    "call_time",
                    models.DateTimeField(help_text="The call's eventTime in the customer's trail."),
                ),
                ("recorded_at", models.DateTimeField(blank=True, null=True)),
                ("acknowledged_at", models.DateTimeField(blank=True, null=True)),
                ("matched_at", models.DateTimeField(auto_now_add=True)),
                (
                    "acknowledged_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "organization",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="trail_call_matches",
                        to="orgs.organization",
                    ),
                ),
                (
                    "portal_event",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="audit.auditevent",
                    ),
                ),
                (
                    "trail_event",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="trail_call_match",
                        to="audit.auditevent",
                    ),
                ),
            ],
            options={
                "ordering": ["-call_time", "-id"],
                "indexes": [
                    models.Index(
                        fields=["organization", "recorded_at"], name="trailcall_confirmed"
                    ),
                    models.Index(
                        condition=models.Q(("portal_event__isnull", True)),
                        fields=["organization", "call_time"],
                        name="trailcall_unexplained",
                    ),
                    models.Index(
                        condition=models.Q(
                            ("acknowledged_at__isnull", True), ("portal_event__isnull", True)
                        ),
                        fields=["organization"],
                        name="trailcall_open_alerts",
                    ),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("request_id", ""), _negated=True),
                        fields=("organization", "request_id"),
                        name="trailcall_once_per_request",
                    )
                ],
            },
        ),
    ]
