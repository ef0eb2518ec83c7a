import hashlib
from datetime import UTC

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Count, Q
from django.db.models.functions import TruncHour

DIMENSIONS = ("event_name", "event_source", "principal", "key_arn", "aws_region")


def count_existing_events(apps, schema_editor):
    """One aggregate over the events already recorded, written in batches (the digest is
    ``audit.volume.dims_of``, repeated here: a migration does not import app code)."""
    AuditEvent = apps.get_model("audit", "AuditEvent")
    EventVolume = apps.get_model("audit", "EventVolume")
    rows = (
        AuditEvent.objects.exclude(organization=None)
        .order_by()
        .annotate(bucket=TruncHour("event_time", tzinfo=UTC))
        .values("organization_id", "bucket", *DIMENSIONS)
        .annotate(total=Count("*"), errors=Count("id", filter=~Q(error_code="")))
    )
    batch = []
    for row in rows.iterator(chunk_size=5000):
        values = tuple(row[name] for name in DIMENSIONS)
        joined = "\x1f".join(values).encode("utf-8", "surrogatepass")
        batch.append(
            EventVolume(
                organization_id=row["organization_id"],
                hour=row["bucket"],
                dims=hashlib.md5(joined, usedforsecurity=False).hexdigest(),
                **dict(zip(DIMENSIONS, values, strict=True)),
                total=row["total"],
                errors=row["errors"],
            )
        )
        if len(batch) >= 5000:
            EventVolume.objects.bulk_create(batch)
            batch = []
    EventVolume.objects.bulk_create(batch)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0009_event_counts"),
        ("orgs", "0004_staff_groups_reencryption"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventVolume",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("hour", models.DateTimeField(help_text="Start of the UTC hour.")),
                (
                    "dims",
                    models.CharField(
                        help_text="MD5 of the five columns below (a key, not a security measure).",
                        max_length=32,
                    ),
                ),
                ("event_name", models.CharField(max_length=100)),
                ("event_source", models.CharField(max_length=100)),
                ("principal", models.CharField(max_length=300)),
                ("key_arn", models.CharField(max_length=300)),
                ("aws_region", models.CharField(max_length=30)),
                ("total", models.BigIntegerField(default=0)),
                ("errors", models.BigIntegerField(default=0)),
                (
                    "organization",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="orgs.organization",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("organization", "hour", "dims"), name="eventvolume_org_hour_dims"
                    )
                ],
                "indexes": [
                    models.Index(fields=["organization", column, "hour"], name=name)
                    for column, name in (
                        ("event_name", "eventvolume_org_name"),
                        ("event_source", "eventvolume_org_src"),
                        ("principal", "eventvolume_org_principal"),
                        ("key_arn", "eventvolume_org_key"),
                        ("aws_region", "eventvolume_org_region"),
                    )
                ],
            },
        ),
        migrations.RunPython(count_existing_events, migrations.RunPython.noop),
    ]
