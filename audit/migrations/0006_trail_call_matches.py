from django.db import migrations


class Migration(migrations.Migration):
    """Placeholder: the reconciliation of vendor calls with the customer's trail."""

    dependencies = [("audit", "0005_hash_format_provenance")]

    operations = []
