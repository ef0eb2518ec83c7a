"""Preflight: the customer's AWS side is verified, region by region, before provisioning.

moto runs in-process. What moto does not do (enforce trust policies, throttle, time out, or
return a key from another region for a regional alias) is injected at the botocore layer
through ``connections.aws.EVENT_HOOKS`` (see tests/keys/conftest.py), so the portal's real client
code — retries included — handles it.
"""

import base64
import json
from datetime import timedelta

import botocore.exceptions
import pytest
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import verify_chain
from connections.models import ByokConnection
from setup import preflight
from setup.models import PreflightRun, RequestEvent, SetupRequest
from setup.preflight import (
    THROTTLED_REMEDIATION,
    Check,
    PreflightNotAllowed,
    PreflightReport,
    execute_preflight,
    latest_passing_preflight,
    run_preflight_checks,
    start_preflight,
)
from setup.tasks import run_preflight_task
from tests.customer_aws import CUSTOMER_ACCOUNT, KEY_ALIAS, ROLE_ARN, ROLE_NAME
from tests.factories import OrganizationFactory, UserFactory, org_admin

pytestmark = pytest.mark.django_db

EXTERNAL_ID = "byok-0123456789abcdef0123456789abcdef"
US = ("us-east-1", "us-west-2")
CONTEXT = {"org": "1", "site": "acme-secure", "purpose": "preflight"}
REGION_CHECKS = ["key-found", "key-region", "key-state", "key-enabled", "key-type", "round-trip"]


@pytest.fixture
def org():
    return OrganizationFactory()


def run_checks(org, location="us"):
    return run_preflight_checks(
        org=org,
        role_arn=ROLE_ARN,
        external_id=EXTERNAL_ID,
        location_code=location,
        alias=KEY_ALIAS,
        encryption_context=CONTEXT,
    )


def checks_in(report, region):
    return [c for c in report.checks if c.region == region]


def only_failure(report) -> Check:
    assert len(report.failures) == 1, report.failures
    return report.failures[0]


def key_usage_records(org):
    return [
        e.record
        for e in AuditEvent.objects.filter(organization=org, kind=AuditEvent.Kind.KEY_USAGE)
        .order_by("sequence")
        .iterator()
    ]


# --- All good -----------------------------------------------------------------------------


def test_all_checks_pass_in_both_regions_of_the_usa_location(customer_aws, org):
    key_arns = customer_aws.set_up(US, external_id=EXTERNAL_ID)

    report = run_checks(org)

    assert report.passed and not report.transient and report.failures == []
    assert report.key_arns == key_arns
    assert report.checks[0].name == "role" and report.checks[0].region == ""
    for region in US:
        assert [c.name for c in checks_in(report, region)] == REGION_CHECKS


def test_single_region_location_checks_only_its_region(customer_aws, org):
    customer_aws.set_up(["ap-northeast-1"], external_id=EXTERNAL_ID)

    report = run_checks(org, location="jp")

    assert report.passed
    assert {c.region for c in report.checks} == {"", "ap-northeast-1"}
    assert list(report.key_arns) == ["ap-northeast-1"]


def test_every_call_is_a_key_usage_event_with_the_context_and_no_key_material(
    customer_aws, org, aws_spy
):
    customer_aws.set_up(US, external_id=EXTERNAL_ID)
    generated = aws_spy("kms.GenerateDataKey")
    decrypted = aws_spy("kms.Decrypt")

    assert run_checks(org).passed

    records = key_usage_records(org)
    assert [r["eventName"] for r in records] == [
        "AssumeRole",
        *["DescribeKey", "GenerateDataKey", "Decrypt"] * 2,
    ]
    crypto = [r for r in records if r["eventName"] in ("GenerateDataKey", "Decrypt")]
    assert all(r["requestParameters"]["encryptionContext"] == CONTEXT for r in crypto)
    assert {r["awsRegion"] for r in crypto} == set(US)
    assert all(r["recipientAccountId"] == CUSTOMER_ACCOUNT for r in records)
    # The data keys and their wrapped forms never reach the audit log, in any encoding.
    secrets = [s["Plaintext"] for s in generated.seen + decrypted.seen]
    secrets += [s["CiphertextBlob"] for s in generated.seen]
    assert len(secrets) == 6
    dumped = json.dumps(records)
    for secret in secrets:
        for form in (base64.b64encode(secret).decode(), secret.hex(), repr(secret)):
            assert form not in dumped
    assert verify_chain(f"org:{org.pk}") is None


# --- Failures, one by one -------------------------------------------------------------------


@pytest.mark.parametrize(
    "aws_message",
    [
        # What STS answers when the role does not exist …
        f"User: arn:aws:sts::111122223333:assumed-role/byok-portal-service/x is not authorized "
        f"to perform: sts:AssumeRole on resource: {ROLE_ARN}",
        # … and when the trust policy does not let us in (or the external ID is wrong).
        "Access denied by the trust policy of the role",
    ],
    ids=["no-role", "trust-denied"],
)
def test_role_refused_fails_with_trust_policy_remediation(
    customer_aws, org, inject_aws_error, settings, aws_message
):
    customer_aws.set_up(US, external_id=EXTERNAL_ID)
    refused = inject_aws_error(
        "sts.AssumeRole", code="AccessDenied", message=aws_message, status=403
    )

    report = run_checks(org)

    check = only_failure(report)
    assert report.checks == [check]  # nothing else can run without the role
    assert (check.name, check.cause) == ("role", "role-unavailable")
    assert check.remediation == (
        f"Create the IAM role {ROLE_NAME} from the onboarding kit, or check its trust policy "
        f"allows {settings.VENDOR_PRINCIPAL_ARN} with external ID {EXTERNAL_ID}."
    )
    assert "AccessDenied" in check.detail
    assert not report.transient and report.key_arns == {}
    assert refused.calls == 1  # a refusal is not retried
    (event,) = key_usage_records(org)
    assert (event["eventName"], event["errorCode"]) == ("AssumeRole", "AccessDenied")


def test_missing_alias_fails_only_its_region(customer_aws, org):
    customer_aws.create_role(external_id=EXTERNAL_ID)
    east = customer_aws.create_key("us-east-1")
    customer_aws.create_key("us-west-2", alias=None)

    report = run_checks(org)

    assert [c.name for c in checks_in(report, "us-east-1")] == REGION_CHECKS
    assert all(c.passed for c in checks_in(report, "us-east-1"))
    check = only_failure(report)
    assert checks_in(report, "us-west-2") == [check]  # later checks of the region not run
    assert (check.name, check.region, check.cause) == ("key-found", "us-west-2", "key-not-found")
    assert check.remediation == (
        f"Create a symmetric encryption key in us-west-2 and give it the alias {KEY_ALIAS} "
        "(the onboarding kit does both)."
    )
    assert report.key_arns == {"us-east-1": east}


def test_disabled_key_fails_with_enable_remediation(customer_aws, org):
    keys = customer_aws.set_up(US, external_id=EXTERNAL_ID)
    customer_aws.disable_key("us-east-1", keys["us-east-1"])

    report = run_checks(org)

    check = only_failure(report)
    assert (check.name, check.region, check.cause) == ("key-enabled", "us-east-1", "key-disabled")
    key_id = keys["us-east-1"].rsplit("/", 1)[1]
    assert check.remediation == (
        f"Enable the key (aws kms enable-key --key-id {key_id} --region us-east-1) "
        "and run the preflight again."
    )
    assert [c.name for c in checks_in(report, "us-east-1")][-1] == "key-enabled"
    assert all(c.passed for c in checks_in(report, "us-west-2"))


def test_key_pending_deletion_fails_with_cancel_deletion_remediation(customer_aws, org):
    keys = customer_aws.set_up(US, external_id=EXTERNAL_ID)
    customer_aws.schedule_deletion("us-west-2", keys["us-west-2"])

    report = run_checks(org)

    check = only_failure(report)
    assert (check.name, check.region, check.cause) == (
        "key-state",
        "us-west-2",
        "key-pending-deletion",
    )
    key_id = keys["us-west-2"].rsplit("/", 1)[1]
    assert check.remediation == (
        f"Cancel the key's scheduled deletion (aws kms cancel-key-deletion --key-id {key_id} "
        "--region us-west-2), enable it, and run the preflight again."
    )


@pytest.mark.parametrize(
    ("key_spec", "key_usage"),
    [
        ("RSA_2048", "SIGN_VERIFY"),
        ("RSA_2048", "ENCRYPT_DECRYPT"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
    ],
)
def test_key_that_is_not_symmetric_encryption_fails_with_key_type_remediation(
    customer_aws, org, key_spec, key_usage
):
    customer_aws.create_role(external_id=EXTERNAL_ID)
    customer_aws.create_key("ap-southeast-2", key_spec=key_spec, key_usage=key_usage)

    report = run_checks(org, location="au")

    check = only_failure(report)
    assert (check.name, check.cause) == ("key-type", "wrong-key-type")
    assert key_spec in check.detail and key_usage in check.detail
    assert check.remediation == (
        "Create a symmetric encryption key in ap-southeast-2 (key spec SYMMETRIC_DEFAULT, "
        f"usage ENCRYPT_DECRYPT) and move the alias {KEY_ALIAS} to it."
    )
    # The round trip was not attempted with the wrong key.
    assert "GenerateDataKey" not in [r["eventName"] for r in key_usage_records(org)]


def test_key_in_another_region_fails_with_key_region_remediation(
    customer_aws, org, inject_aws_error
):
    # An alias can only name a key of its own region, in AWS and in moto; the portal still
    # guards against a key from elsewhere (a key ARN pasted instead of an alias, an SDK or
    # proxy misrouting). Simulated by rewriting DescribeKey's parsed answer in us-west-2.
    customer_aws.set_up(US, external_id=EXTERNAL_ID)
    inject_aws_error(
        "kms.DescribeKey",
        rewrite=lambda parsed: parsed["KeyMetadata"].update(
            Arn=parsed["KeyMetadata"]["Arn"].replace(":us-west-2:", ":eu-west-1:")
        ),
    )

    report = run_checks(org)

    check = only_failure(report)
    assert (check.name, check.region, check.cause) == ("key-region", "us-west-2", "wrong-region")
    assert "resolves to a key in eu-west-1" in check.detail
    assert check.remediation == (
        f"Create a key in us-west-2 and point the alias {KEY_ALIAS} in us-west-2 to it: "
        "each region of the location needs its own key."
    )


def test_key_policy_refusal_fails_with_key_policy_remediation(customer_aws, org, inject_aws_error):
    customer_aws.set_up(["ca-central-1"], external_id=EXTERNAL_ID)
    inject_aws_error(
        "kms.GenerateDataKey",
        code="AccessDeniedException",
        message="User is not authorized to perform: kms:GenerateDataKey",
    )

    report = run_checks(org, location="ca")

    check = only_failure(report)
    assert (check.name, check.cause) == ("round-trip", "access-denied")
    assert check.remediation == (
        f"Update the key policy of {KEY_ALIAS} in ca-central-1 so the role {ROLE_NAME} may call "
        "kms:DescribeKey, kms:GenerateDataKey and kms:Decrypt (see the onboarding kit)."
    )


def test_throttling_is_retried_by_botocore_then_reported_as_transient(
    customer_aws, org, inject_aws_error, settings
):
    customer_aws.set_up(["ap-northeast-1"], external_id=EXTERNAL_ID)
    settings.AWS_MAX_ATTEMPTS = 3
    throttled = inject_aws_error(
        "kms.GenerateDataKey", code="ThrottlingException", message="Rate exceeded"
    )

    report = run_checks(org, location="jp")

    assert throttled.calls == settings.AWS_MAX_ATTEMPTS
    check = only_failure(report)
    assert (check.name, check.cause) == ("round-trip", "throttled")
    assert check.remediation == THROTTLED_REMEDIATION
    assert report.transient and not report.passed
    assert "Traceback" not in check.detail and "ThrottlingException" in check.detail


def test_unreachable_endpoint_is_retried_then_reported_as_transient(
    customer_aws, org, inject_aws_error, settings
):
    customer_aws.set_up(["ap-south-1"], external_id=EXTERNAL_ID)
    settings.AWS_MAX_ATTEMPTS = 2
    timeout = botocore.exceptions.ConnectTimeoutError(
        endpoint_url="https://kms.ap-south-1.amazonaws.com/"
    )
    unreachable = inject_aws_error("kms.DescribeKey", exception=timeout)

    report = run_checks(org, location="in")

    assert unreachable.calls == 2
    check = only_failure(report)
    assert (check.name, check.cause) == ("key-found", "unreachable")
    assert "did not answer" in check.detail and "ConnectTimeoutError" in check.detail
    assert "run the preflight again in a few minutes" in check.remediation
    assert report.transient


def test_sts_outage_on_assume_role_is_transient(customer_aws, org, inject_aws_error):
    customer_aws.set_up(US, external_id=EXTERNAL_ID)
    inject_aws_error("sts.AssumeRole", code="ServiceUnavailable", status=503)

    report = run_checks(org)

    check = only_failure(report)
    assert (check.name, check.cause) == ("role", "unreachable")
    assert report.transient


def test_transient_and_permanent_failures_together_are_not_transient(
    customer_aws, org, inject_aws_error
):
    customer_aws.create_role(external_id=EXTERNAL_ID)
    customer_aws.create_key("us-east-1")  # no key at all in us-west-2
    inject_aws_error("kms.GenerateDataKey", code="ThrottlingException", message="Rate exceeded")

    report = run_checks(org)

    assert {c.cause for c in report.failures} == {"throttled", "key-not-found"}
    assert not report.transient


# --- The report -----------------------------------------------------------------------------


def test_report_survives_a_json_round_trip():
    report = PreflightReport(
        checks=[
            Check("role", "", True, "Assumed.", ""),
            Check("key-found", "us-east-1", False, "No key.", "Create it.", "key-not-found"),
        ],
        key_arns={"us-east-1": "arn:aws:kms:us-east-1:444455556666:key/k"},
    )

    data = json.loads(json.dumps(report.to_dict()))

    assert PreflightReport.from_dict(data) == report
    # Older rows (saved without a cause) still load.
    old_row = {"name": "x", "region": "", "passed": True, "detail": "", "remediation": ""}
    assert Check.from_dict(old_row).cause == ""


def test_an_empty_report_has_not_passed():
    assert not PreflightReport().passed


# --- Services -------------------------------------------------------------------------------


@pytest.fixture
def setup_request(org):
    ByokConnection.objects.create(organization=org, aws_account_id=CUSTOMER_ACCOUNT, location="us")
    return SetupRequest.objects.create(
        organization=org,
        requested_by=org_admin(org),
        aws_account_id=CUSTOMER_ACCOUNT,
        site_name="acme-secure",
        location="us",
        apps=["jira", "confluence"],
    )


@pytest.fixture
def rep():
    return UserFactory(is_staff=True)


@pytest.fixture
def customer_ready(customer_aws, setup_request):
    connection = setup_request.organization.byok_connection
    return customer_aws.set_up(US, external_id=connection.external_id)


def start(setup_request, rep, capture):
    with capture(execute=True):
        run = start_preflight(setup_request=setup_request, actor=rep)
    run.refresh_from_db()
    return run


def test_started_preflight_runs_after_commit_and_saves_a_passing_report(
    customer_ready, setup_request, rep, aws_hooks, django_capture_on_commit_callbacks
):
    sent = []
    aws_hooks.append(("before-send.sts.AssumeRole", lambda request, **kw: sent.append(request)))

    run = start(setup_request, rep, django_capture_on_commit_callbacks)

    assert run.status == PreflightRun.Status.PASSED and run.finished_at is not None
    assert run.started_by == rep
    assert run.key_arns == customer_ready
    assert PreflightReport.from_run(run).passed
    # The org's own external ID guards the role (confused-deputy protection).
    external_id = setup_request.organization.byok_connection.external_id
    body = sent[0].body
    assert f"ExternalId={external_id}" in (body.decode() if isinstance(body, bytes) else body)
    # The encryption context binds org, site and purpose.
    org = setup_request.organization
    context = {"org": str(org.pk), "site": "acme-secure", "purpose": "preflight"}
    decrypts = [r for r in key_usage_records(org) if r["eventName"] == "Decrypt"]
    assert len(decrypts) == 2
    assert all(r["requestParameters"]["encryptionContext"] == context for r in decrypts)
    timeline = list(RequestEvent.objects.filter(request=setup_request))
    assert [e.kind for e in timeline] == ["preflight", "preflight"]
    assert timeline[0].actor == rep and "started" in timeline[0].message
    assert timeline[1].message.startswith(f"#{run.pk}: Preflight passed")
    portal = AuditEvent.objects.filter(organization=org, kind=AuditEvent.Kind.PORTAL)
    names = {e.event_name: e for e in portal}
    assert set(names) == {"StartPreflight", "RunPreflight"}
    assert names["StartPreflight"].principal == rep.email
    assert names["RunPreflight"].record["responseElements"]["outcome"] == "passed"
    assert verify_chain(f"org:{org.pk}") is None


def test_failing_preflight_is_saved_as_failed_with_the_remediation_on_the_timeline(
    customer_aws, customer_ready, setup_request, rep, django_capture_on_commit_callbacks
):
    customer_aws.disable_key("us-west-2", customer_ready["us-west-2"])

    run = start(setup_request, rep, django_capture_on_commit_callbacks)

    assert run.status == PreflightRun.Status.FAILED
    failed = [c for c in run.checks if not c["passed"]]
    assert [(c["name"], c["region"], c["cause"]) for c in failed] == [
        ("key-enabled", "us-west-2", "key-disabled")
    ]
    last = RequestEvent.objects.filter(request=setup_request).last()
    assert "us-west-2: The key" in last.message and "aws kms enable-key" in last.message
    outcome = AuditEvent.objects.get(event_name="RunPreflight").record["responseElements"]
    assert outcome["outcome"] == "failed"
    assert outcome["failedChecks"] == [
        {"name": "key-enabled", "region": "us-west-2", "cause": "key-disabled"}
    ]


def test_executing_a_finished_preflight_again_changes_nothing(
    customer_ready, setup_request, rep, django_capture_on_commit_callbacks
):
    run = start(setup_request, rep, django_capture_on_commit_callbacks)
    events = AuditEvent.objects.count()

    again = execute_preflight(preflight_run_id=run.pk)

    assert again.status == run.status and again.finished_at == run.finished_at
    assert AuditEvent.objects.count() == events  # no AWS call, no new event
    assert RequestEvent.objects.filter(request=setup_request).count() == 2


def test_preflight_without_a_connection_fails_with_a_clear_check(
    mock_aws, org, rep, django_capture_on_commit_callbacks
):
    request = SetupRequest.objects.create(
        organization=org,
        requested_by=org_admin(org),
        aws_account_id=CUSTOMER_ACCOUNT,
        site_name="no-connection",
        location="eu",
        apps=["jira"],
    )

    run = start(request, rep, django_capture_on_commit_callbacks)

    assert run.status == PreflightRun.Status.FAILED
    assert [c["cause"] for c in run.checks] == ["no-connection"]


@pytest.mark.parametrize("status", [SetupRequest.Status.PROVISIONED, SetupRequest.Status.REJECTED])
def test_preflight_is_refused_on_a_closed_request(setup_request, rep, status):
    SetupRequest.objects.filter(pk=setup_request.pk).update(status=status)

    with pytest.raises(PreflightNotAllowed, match="only run while the request is open"):
        start_preflight(setup_request=setup_request, actor=rep)

    assert not PreflightRun.objects.exists()


@pytest.mark.parametrize("status", [PreflightRun.Status.QUEUED, PreflightRun.Status.RUNNING])
def test_preflight_is_refused_while_another_is_queued_or_running(setup_request, rep, status):
    busy = PreflightRun.objects.create(request=setup_request, status=status, started_by=rep)

    with pytest.raises(PreflightNotAllowed, match=f"Preflight #{busy.pk} of this request"):
        start_preflight(setup_request=setup_request, actor=rep)

    assert PreflightRun.objects.count() == 1


def test_a_lost_preflight_does_not_block_a_new_one(
    setup_request, rep, django_capture_on_commit_callbacks
):
    lost = PreflightRun.objects.create(
        request=setup_request, status=PreflightRun.Status.RUNNING, started_by=rep
    )
    PreflightRun.objects.filter(pk=lost.pk).update(
        created_at=timezone.now() - preflight.STALE_AFTER - timedelta(minutes=1)
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = start_preflight(setup_request=setup_request, actor=rep)

    lost.refresh_from_db()
    assert lost.status == PreflightRun.Status.FAILED
    assert lost.checks[0]["cause"] == "timed-out"
    assert run.status == PreflightRun.Status.QUEUED and len(callbacks) == 1


@pytest.mark.parametrize("bad", [0, -3, "7", 7.0, True, None])
def test_task_refuses_anything_but_a_positive_integer_id(bad):
    with pytest.raises(ValueError, match="positive integer"):
        run_preflight_task(bad)


def test_task_for_a_deleted_run_does_nothing():
    assert run_preflight_task(987654) is None


# --- Provisioning's gate ---------------------------------------------------------------------


def _finished(setup_request, status, *, age: timedelta):
    return PreflightRun.objects.create(
        request=setup_request, status=status, finished_at=timezone.now() - age
    )


def test_latest_passing_preflight_returns_a_recent_pass(setup_request):
    _finished(setup_request, PreflightRun.Status.FAILED, age=timedelta(hours=3))
    passed = _finished(setup_request, PreflightRun.Status.PASSED, age=timedelta(hours=1))

    assert latest_passing_preflight(setup_request) == passed


def test_a_pass_older_than_max_age_does_not_count(setup_request):
    _finished(setup_request, PreflightRun.Status.PASSED, age=timedelta(hours=25))

    assert latest_passing_preflight(setup_request) is None
    assert latest_passing_preflight(setup_request, max_age=timedelta(days=2)) is not None


def test_a_pass_followed_by_a_failure_does_not_count(setup_request):
    _finished(setup_request, PreflightRun.Status.PASSED, age=timedelta(hours=2))
    _finished(setup_request, PreflightRun.Status.FAILED, age=timedelta(hours=1))

    assert latest_passing_preflight(setup_request) is None


def test_no_preflight_means_no_pass(setup_request):
    PreflightRun.objects.create(request=setup_request, status=PreflightRun.Status.RUNNING)

    assert latest_passing_preflight(setup_request) is None
