"""Issue 6 end to end in a browser: the admin requests re-encryption in a maintenance window,
the rep claims, preflights the new keys and approves, the progress bar advances to done while
the admin watches, the data stays readable, and the audit log shows every step."""

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from connections.models import ByokConnection, DataKey
from dataplane import dek_cache
from dataplane.records import store_record
from demo import customer_side
from demo.acme import ACME_AWS_ACCOUNT, seed_demo_byok
from demo.seed import seed_demo_world
from orgs.models import AppInstance
from reencryption import job as reencryption_job
from reencryption.models import ReencryptionJob
from setup.onboarding import REPLACEMENT_KEY_ALIAS

pytestmark = pytest.mark.django_db(transaction=True)
EXTRA_DEKS_PER_APP = 2


@pytest.fixture
def acme(moto_reset):
    orgs = seed_demo_world()
    seed_demo_byok()
    org = orgs["Acme Corp"]
    # A few more data keys (as daily rotation makes), so the job has several batches to show.
    for app in AppInstance.objects.filter(site__organization=org, encryption="byok"):
        for i in range(EXTRA_DEKS_PER_APP):
            DataKey.objects.filter(app_instance=app, is_current=True).update(is_current=False)
            dek_cache.purge_all()
            store_record(app_instance=app, kind="comment", plaintext=f"note {i}".encode())
    # The customer deploys the kit's replacement-keys template in both regions.
    connection = ByokConnection.objects.get(organization=org)
    customer_side.create_customer_side(
        account_id=ACME_AWS_ACCOUNT,
        location_code=connection.location,
        external_id=connection.external_id,
        vendor_principal_arn=settings.VENDOR_PRINCIPAL_ARN,
        alias=REPLACEMENT_KEY_ALIAS,
    )
    return org


def test_admin_requests_rep_approves_and_the_job_runs_to_done(
    page, browser, live_server, login, acme
):
    # The admin asks for a re-wrap in a maintenance window tomorrow, 03:00 Berlin time.
    login(page, "admin@acme.example", otp=True)
    page.goto(f"/orgs/{acme.pk}/byok/")
    page.get_by_role("link", name="Re-encrypt under new keys…").click()
    expect(page.locator("main")).to_contain_text("byok-us-us-east-1-next.template.json")
    page.get_by_label("In a maintenance window").check()
    tomorrow = (timezone.now() + timedelta(days=1)).date()
    page.get_by_label("Window date").fill(tomorrow.isoformat())
    page.get_by_label("Window start time").fill("03:00")
    page.get_by_label("Time zone").select_option("Europe/Berlin")
    page.get_by_role("button", name="Request re-encryption").click()
    expect(page.locator(".messages")).to_contain_text("Re-encryption request #")
    expect(page.locator("h1")).to_contain_text("Submitted")
    expect(page.locator("main")).to_contain_text("Europe/Berlin")
    detail_url = page.url

    # The rep claims it, preflights the new keys and approves.
    rep_context = browser.new_context(base_url=live_server.url)
    rep = rep_context.new_page()
    login(rep, "rep@vendor.example")
    rep.goto("/staff/requests/")
    rep.get_by_role("link", name=re.compile(r"Re-encryption #\d+")).click()
    rep.get_by_role("button", name="Claim").click()
    expect(rep.locator(".messages")).to_contain_text("Request claimed")
    rep.get_by_role("button", name="Approve").click()
    expect(rep.locator(".messages")).to_contain_text("passing preflight")
    rep.get_by_role("button", name="Run preflight").click()
    expect(rep.locator("#preflight-report")).to_contain_text("Passed", timeout=20_000)
    expect(rep.locator("#preflight-report .badge-fail")).to_have_count(0)
    expect(rep.locator("#preflight-report")).to_contain_text("re-encrypt")
    rep.get_by_role("button", name="Approve").click()
    expect(rep.locator(".messages")).to_contain_text("Approved")
    expect(rep.locator("#reencryption-progress")).to_contain_text("Scheduled")
    rep_context.close()

    # The window arrives: a worker picks the job up. The test is the worker here, one batch
    # at a time, while the admin's page polls the progress fragment.
    job = ReencryptionJob.objects.get(request__organization=acme)
    ReencryptionJob.objects.filter(pk=job.pk).update(
        scheduled_for=timezone.now() - timedelta(seconds=1), batch_size=1
    )
    total = DataKey.objects.filter(app_instance__site__organization=acme).count()
    page.goto(detail_url)
    progress = page.locator("#reencryption-progress")
    expect(progress).to_contain_text("Scheduled")
    reencryption_job.run_job(job_id=job.pk, max_steps=1)  # the switch
    expect(progress).to_contain_text(f"0 of {total} data keys", timeout=10_000)
    expect(progress).to_contain_text("Running")
    for done in range(1, total + 1):
        reencryption_job.run_job(job_id=job.pk, max_steps=1)
        expect(progress.locator(".reencryption-done")).to_contain_text(
            f"{done} of {total} data keys", timeout=10_000
        )
    reencryption_job.run_job(job_id=job.pk)  # verification and retirement
    expect(progress).to_contain_text("Completed", timeout=10_000)
    expect(progress.locator("progress")).to_have_attribute("value", "100")
    expect(progress).to_contain_text("you may disable them")
    expect(page.locator("#reencryption-progress [data-poll-done]")).to_have_count(1)

    # The data is readable under the new keys (the read-only page shows the last check, which
    # "Check now" runs); the old keys show as retired.
    page.goto(f"/orgs/{acme.pk}/byok/")
    page.get_by_role("button", name="Check now").click()
    for app in ("jira", "confluence"):
        row = page.locator(f"tr[data-app='{app}']")
        expect(row).to_contain_text("Active")
        expect(row).to_contain_text("Readable")
    page.goto(f"/orgs/{acme.pk}/byok/reencrypt/")
    expect(page.locator(".reencryption-keys")).to_contain_text("Retired")
    expect(page.locator(".reencryption-history")).to_contain_text("Completed")

    # Every step is in the audit log, and the KMS calls as key-usage events.
    page.goto(f"/orgs/{acme.pk}/audit/?event_source=byok.portal.vendor.example")
    body = page.locator("main")
    for name in (
        "RequestReencryption",
        "ClaimReencryptionRequest",
        "StartReencryptionPreflight",
        "RunReencryptionPreflight",
        "ApproveReencryption",
        "StartReencryption",
        "RewrapDataKeys",
        "VerifyReencryption",
        "CompleteReencryption",
    ):
        expect(body).to_contain_text(name)
    page.goto(f"/orgs/{acme.pk}/audit/?event_name=ReEncrypt")
    expect(page.locator("main")).to_contain_text("kms.amazonaws.com")
