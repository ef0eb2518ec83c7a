"""The vendor's record of its calls, confirmed by the customer's own CloudTrail.

Each test imports trail records through ``ingestion.import_records`` (the path every log file
takes, in its transaction) and looks at what the customer sees: the reconciliation rows, the
alert (audit event, e-mail, banner, webhook delivery) and the per-day counts.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db.models import Count
from django.urls import reverse

from audit.models import AuditEvent, CloudTrailSource, TrailCallMatch, WebhookDelivery
from audit.selectors import unexplained_call_banners, vendor_calls_by_day
from audit.services import record_event
from connections import aws
from connections.key_usage import record_key_usage
from connections.models import RegionalKey
from integrations import ingestion
from integrations.reconcile import ACKNOWLEDGE_EVENT, UNEXPLAINED_EVENT
from tests.factories import ByokConnectionFactory, OrganizationFactory, org_admin, org_member
from tests.support import login_verified

pytestmark = pytest.mark.django_db

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/byok-key-management"
SESSION_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/byok-key-management/byok-portal"
KEY_ARN = f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/0a1b2c3d-0000-4000-8000-000000000001"


def byok_org(name="Acme", *, account=ACCOUNT):
    org = OrganizationFactory(name=name)
    connection = ByokConnectionFactory(organization=org, aws_account_id=account)
    RegionalKey.objects.create(connection=connection, region="eu-central-1", key_arn=KEY_ARN)
    source = CloudTrailSource.objects.create(
        organization=org, bucket=f"{name.lower()}-trail", prefix="AWSLogs/", region="eu-central-1"
    )
    return org, connection, source


def portal_call(org, operation="Decrypt", *, request_id=None, error=None) -> AuditEvent:
    """The portal's key-usage event of one call, as ``connections.aws`` reports it."""
    is_sts = operation == "AssumeRole"
    call = aws.KmsCall(
        operation=operation,
        service="sts.amazonaws.com" if is_sts else "kms.amazonaws.com",
        region="us-east-1" if is_sts else "eu-central-1",
        key_arn="" if is_sts else KEY_ARN,
        encryption_context={} if is_sts else {"org": str(org.pk), "app": "jira"},
        role_arn=org.byok_connection.role_arn,
        account_id=org.byok_connection.aws_account_id,
        request_id=request_id or str(uuid.uuid4()),
        error=error,
    )
    return record_key_usage(org=org, call=call)


def trail_record(operation="Decrypt", *, request_id, when=None, identity=None, **extra) -> dict:
    """A record of the customer's trail as AWS writes it for the vendor's call."""
    when = when or datetime.now(UTC)
    is_sts = operation == "AssumeRole"
    if identity is None and is_sts:
        identity = {
            "type": "AWSAccount",
            "principalId": "AROAVENDOREXAMPLE:byok-portal",
            "accountId": settings.VENDOR_AWS_ACCOUNT_ID,
        }
    elif identity is None:
        identity = {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLEROLE:byok-portal",
            "arn": SESSION_ARN,
            "accountId": ACCOUNT,
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "arn": ROLE_ARN, "accountId": ACCOUNT}
            },
        }
    record = {
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "sts.amazonaws.com" if is_sts else "kms.amazonaws.com",
        "eventName": operation,
        "awsRegion": "us-east-1" if is_sts else "eu-central-1",
        "sourceIPAddress": "198.51.100.9",
        "userAgent": "Boto3/1.35",
        "requestParameters": (
            {"roleArn": ROLE_ARN, "roleSessionName": "byok-portal"}
            if is_sts
            else {"keyId": KEY_ARN}
        ),
        "responseElements": None,
        "requestID": request_id,
        "eventID": str(uuid.uuid4()),
        "readOnly": True,
        "resources": [
            {"type": "AWS::IAM::Role", "ARN": ROLE_ARN, "accountId": ACCOUNT}
            if is_sts
            else {"type": "AWS::KMS::Key", "ARN": KEY_ARN, "accountId": ACCOUNT}
        ],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    record.update(extra)
    return record


def import_trail(org, records, *, n=[0]):  # noqa: B006 — a file counter shared by the tests
    n[0] += 1
    source = CloudTrailSource.objects.get(organization=org)
    obj = aws.S3Object(key=f"AWSLogs/{n[0]}.json.gz", etag=f"etag-{n[0]}", size=100)
    matcher = ingestion.ByokMatcher.for_connection(org.byok_connection)
    return ingestion.import_records(source=source, obj=obj, records=records, matcher=matcher)


def matches(org):
    return {m.request_id: m for m in TrailCallMatch.objects.filter(organization=org)}


def alerts(org):
    return AuditEvent.objects.filter(organization=org, event_name=UNEXPLAINED_EVENT)


# --- Matching -----------------------------------------------------------------------------


def test_the_vendors_recorded_calls_in_the_trail_are_confirmed_assume_role_included():
    org, _, _ = byok_org()
    decrypt = portal_call(org, "Decrypt")
    assume = portal_call(org, "AssumeRole")
    import_trail(
        org,
        [
            trail_record("AssumeRole", request_id=assume.request_id),
            trail_record("Decrypt", request_id=decrypt.request_id),
        ],
    )
    found = matches(org)
    assert found[decrypt.request_id].portal_event_id == decrypt.pk
    assert found[assume.request_id].portal_event_id == assume.pk
    assert found[decrypt.request_id].recorded_at == decrypt.event_time
    assert not alerts(org).exists()


def test_a_refused_call_is_confirmed_by_the_trails_record_of_the_refusal():
    org, _, _ = byok_org()
    refused = portal_call(org, "AssumeRole", error=aws.AccessDenied("denied", code="AccessDenied"))
    import_trail(
        org,
        [trail_record("AssumeRole", request_id=refused.request_id, errorCode="AccessDenied")],
    )
    assert matches(org)[refused.request_id].is_confirmed


def test_a_vendor_role_call_the_portal_never_made_is_unexplained():
    org, _, _ = byok_org()
    portal_call(org, "Decrypt")
    forged = str(uuid.uuid4())
    import_trail(org, [trail_record("Decrypt", request_id=forged)])
    row = matches(org)[forged]
    assert row.portal_event_id is None and row.recorded_at is None
    assert row.event_name == "Decrypt"


def test_an_assume_role_by_the_vendor_that_the_portal_never_made_is_unexplained():
    org, _, _ = byok_org()
    forged = str(uuid.uuid4())
    import_trail(org, [trail_record("AssumeRole", request_id=forged)])
    assert not matches(org)[forged].is_confirmed


def test_a_request_id_of_another_operation_does_not_confirm_the_call():
    org, _, _ = byok_org()
    describe = portal_call(org, "DescribeKey")
    import_trail(org, [trail_record("Decrypt", request_id=describe.request_id)])
    assert not matches(org)[describe.request_id].is_confirmed


def test_calls_by_anyone_but_the_vendors_role_are_not_reconciled():
    org, _, _ = byok_org()
    alice = {
        "type": "IAMUser",
        "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
        "accountId": ACCOUNT,
        "userName": "alice",
    }
    other_role_session = {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/ops/alice",
        "accountId": ACCOUNT,
    }
    someone_assumes = {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/bob"}
    import_trail(
        org,
        [
            trail_record("Decrypt", request_id=str(uuid.uuid4()), identity=alice),
            trail_record("Decrypt", request_id=str(uuid.uuid4()), identity=other_role_session),
            trail_record("AssumeRole", request_id=str(uuid.uuid4()), identity=someone_assumes),
        ],
    )
    assert AuditEvent.objects.filter(organization=org, kind="ingested").count() == 3
    assert not TrailCallMatch.objects.exists()
    assert not alerts(org).exists()


def test_the_portals_own_reads_of_the_trail_bucket_are_never_flagged():
    org, _, source = byok_org()
    read = trail_record(
        "GetObject",
        request_id=str(uuid.uuid4()),
        eventSource="s3.amazonaws.com",
        requestParameters={"bucketName": source.bucket, "key": "AWSLogs/x.json.gz"},
    )
    import_trail(org, [read])
    assert not TrailCallMatch.objects.exists()


def test_a_second_trail_record_of_the_same_call_changes_nothing():
    org, _, _ = byok_org()
    decrypt = portal_call(org, "Decrypt")
    forged = str(uuid.uuid4())
    import_trail(
        org, [trail_record(request_id=decrypt.request_id), trail_record(request_id=forged)]
    )
    import_trail(
        org, [trail_record(request_id=decrypt.request_id), trail_record(request_id=forged)]
    )
    assert TrailCallMatch.objects.filter(organization=org).count() == 2
    assert alerts(org).count() == 1


def test_another_orgs_calls_never_confirm_or_flag_this_orgs():
    acme, _, _ = byok_org("Acme")
    globex, _, _ = byok_org("Globex")
    globex_call = portal_call(globex, "Decrypt")
    # Acme's trail shows a call with Globex's request ID: not Acme's record, so unexplained.
    import_trail(acme, [trail_record(request_id=globex_call.request_id)])
    assert not matches(acme)[globex_call.request_id].is_confirmed
    assert not TrailCallMatch.objects.filter(organization=globex).exists()
    assert not alerts(globex).exists()
    assert unexplained_call_banners(org_admin(globex)) == []
    assert [b["org_id"] for b in unexplained_call_banners(org_admin(acme))] == [acme.pk]


# --- The alert ----------------------------------------------------------------------------


@pytest.fixture
def acme_with_webhook(settings):
    from audit import webhooks

    settings.AUDIT_WEBHOOK_ALLOW_LOOPBACK = True
    org, _, _ = byok_org()
    admin = org_admin(org, user__email="admin@acme.example")
    webhooks.configure_webhook(
        org=org, actor=admin, url="http://127.0.0.1:9/hook", secret="s3cret-s3cret-s3cret"
    )
    webhooks.forget_webhook_orgs()
    return org, admin


def test_an_unexplained_call_is_recorded_mailed_delivered_and_bannered(
    acme_with_webhook, mailoutbox, django_capture_on_commit_callbacks, client
):
    org, admin = acme_with_webhook
    forged = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        import_trail(org, [trail_record("Decrypt", request_id=forged)])

    alert = alerts(org).get()
    params = alert.record["requestParameters"]
    assert params["requestID"] == forged
    assert params["eventName"] == "Decrypt"
    assert params["sourceIPAddress"] == "198.51.100.9"
    assert params["eventTime"]
    assert alert.kind == AuditEvent.Kind.PORTAL
    assert WebhookDelivery.objects.filter(event=alert).exists()

    [mail] = mailoutbox
    assert mail.to == ["admin@acme.example"]
    assert forged in mail.body and "no record" in mail.subject

    login_verified(client, admin)
    page = client.get(reverse("orgs:dashboard")).content.decode()
    assert 'data-banner="unexplained-vendor-role-calls"' in page
    assert "1 call made with your BYOK role" in page


def test_an_org_admin_acknowledges_the_alert_and_the_banner_goes(acme_with_webhook, client):
    org, admin = acme_with_webhook
    import_trail(org, [trail_record(request_id="first-call")])
    [banner] = unexplained_call_banners(admin)
    import_trail(org, [trail_record(request_id="after-the-page-was-shown")])
    login_verified(client, admin)
    url = reverse("integrations:acknowledge-unexplained", args=[org.pk])
    response = client.post(url, {"up_to": banner["last_id"]})
    assert response.status_code == 302
    # The call that arrived after the page was shown is still open.
    assert [b["count"] for b in unexplained_call_banners(admin)] == [1]
    ack = AuditEvent.objects.get(organization=org, event_name=ACKNOWLEDGE_EVENT)
    assert ack.record["requestParameters"] == {"count": 1, "requestIDs": ["first-call"]}
    assert ack.principal == admin.email
    # The alerts themselves stay in the log; the matches stay unexplained.
    assert alerts(org).count() == 2
    assert TrailCallMatch.objects.filter(portal_event__isnull=True).count() == 2


def test_acknowledging_is_for_the_orgs_admins_only(acme_with_webhook, client):
    org, admin = acme_with_webhook
    import_trail(org, [trail_record(request_id="a-call")])
    url = reverse("integrations:acknowledge-unexplained", args=[org.pk])
    login_verified(client, org_member(org))
    assert client.post(url, {"up_to": 10**9}).status_code == 403
    login_verified(client, org_admin(OrganizationFactory()))
    assert client.post(url, {"up_to": 10**9}).status_code == 404
    assert TrailCallMatch.objects.get().acknowledged_at is None
    login_verified(client, admin)
    assert client.get(url).status_code == 405


# --- The audit page ---------------------------------------------------------------------------


def test_per_day_counts_equal_count_over_the_same_rows():
    org, _, _ = byok_org()
    now = datetime.now(UTC)
    for days_ago, confirmed, unconfirmed, forged in ((0, 3, 2, 1), (1, 2, 1, 0), (5, 0, 4, 2)):
        when = now - timedelta(days=days_ago)
        records = []
        for _ in range(confirmed):
            event = portal_call(org, "Decrypt")  # recorded today, called on the trail's day
            records.append(trail_record(request_id=event.request_id, when=when))
        for _ in range(unconfirmed):
            portal_call(org, "GenerateDataKey")
        for _ in range(forged):
            records.append(trail_record(request_id=str(uuid.uuid4()), when=when))
        import_trail(org, records)
    # Someone else's org never counts.
    other, _, _ = byok_org("Other")
    portal_call(other, "Decrypt")

    reconciliation = vendor_calls_by_day(org=org, now=now)
    shown = {d.day: d for d in reconciliation.days}
    assert len(reconciliation.days) == 14

    def per_day(queryset, field):
        out = {}
        for value in queryset.values_list(field, flat=True):
            day = value.astimezone(UTC).date()
            out[day] = out.get(day, 0) + 1
        return out

    recorded = per_day(AuditEvent.objects.filter(organization=org, kind="key-usage"), "event_time")
    confirmed = per_day(
        TrailCallMatch.objects.filter(organization=org, portal_event__isnull=False), "recorded_at"
    )
    unexplained = per_day(
        TrailCallMatch.objects.filter(organization=org, portal_event__isnull=True), "call_time"
    )
    for day, row in shown.items():
        assert row.recorded == recorded.get(day, 0)
        assert row.confirmed == confirmed.get(day, 0)
        assert row.unexplained == unexplained.get(day, 0)
        assert row.awaiting == row.recorded - row.confirmed
    assert reconciliation.unexplained == 3
    assert reconciliation.recorded == 5 + 3 + 4 + 0  # all recorded today by portal_call
    assert TrailCallMatch.objects.aggregate(n=Count("id"))["n"] == (3 + 2 + 0) + (1 + 0 + 2)


def test_the_audit_page_shows_the_days_and_a_get_writes_nothing(client):
    org, _, _ = byok_org()
    admin = org_admin(org)
    decrypt = portal_call(org, "Decrypt")
    import_trail(
        org, [trail_record(request_id=decrypt.request_id), trail_record(request_id="forged")]
    )
    login_verified(client, admin)
    before = (
        AuditEvent.objects.count(),
        list(TrailCallMatch.objects.values_list("pk", "acknowledged_at")),
    )
    response = client.get(reverse("audit:list", args=[org.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert f'data-day="{today}" class="audit-error-row"' in page
    assert "about 15 minutes" in page
    assert "1 unexplained call in the last 14 days" in page
    assert 'data-banner="unexplained-vendor-role-calls"' in page
    after = (
        AuditEvent.objects.count(),
        list(TrailCallMatch.objects.values_list("pk", "acknowledged_at")),
    )
    assert before == after


def test_without_a_trail_the_page_says_how_to_confirm_the_calls(client):
    org = OrganizationFactory()
    admin = org_admin(org)
    login_verified(client, admin)
    page = client.get(reverse("audit:list", args=[org.pk])).content.decode()
    assert "Connect your CloudTrail to confirm the vendor" in page


# --- Retention ----------------------------------------------------------------------------


def test_retention_purges_a_match_with_its_events(settings):
    from audit.chain import chain_name_for
    from audit.retention import purge_chain

    org, _, _ = byok_org()
    decrypt = portal_call(org, "Decrypt")
    import_trail(org, [trail_record(request_id=decrypt.request_id)])
    keep = record_event(org=org, event_name="SomethingLater")
    result = purge_chain(
        chain=chain_name_for(org.pk),
        cutoff=keep.event_time + timedelta(seconds=1),
        batch_size=decrypt.sequence,  # only the portal's record is purged
    )
    assert result is not None and result.last_sequence == decrypt.sequence
    assert not TrailCallMatch.objects.exists()
