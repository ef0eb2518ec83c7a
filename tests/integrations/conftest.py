"""Fixtures of the ingestion tests: Acme, its BYOK connection and trail bucket in moto.

``customer_aws`` (moto in-process, the customer's account) comes from ``tests.customer_aws``.
"""

from datetime import UTC, datetime

import pytest

from connections.models import RegionalKey
from tests.integrations.trail_support import RETIRED_KEY, byok_org


@pytest.fixture
def acme(customer_aws):
    org, connection, arns, source = byok_org(customer_aws)
    RegionalKey.objects.create(
        connection=connection,
        region="us-east-1",
        key_arn=RETIRED_KEY,
        generation=0,
        is_current=False,
        retired_at=datetime.now(UTC),
    )
    s3 = customer_aws.client("s3", "us-east-1")
    return {"org": org, "connection": connection, "arns": arns, "source": source, "s3": s3}
