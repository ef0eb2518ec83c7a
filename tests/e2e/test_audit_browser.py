"""The audit log in a real browser: filter, open an event, download the filtered set as CSV."""

import csv
import io
import re
from datetime import UTC, datetime

from playwright.sync_api import expect

from audit.services import record_event
from tests.factories import PASSWORD, OrganizationFactory, org_admin

KEY = "arn:aws:kms:us-east-1:111122223333:key/aaaaaaaa-0000-0000-0000-000000000001"


def _kms(org, name, when, error=""):
    return record_event(
        org=org,
        kind="key-usage",
        event_name=name,
        event_source="kms.amazonaws.com",
        event_time=when,
        aws_region="us-east-1",
        user_identity={"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/r/s"},
        resources=[{"type": "AWS::KMS::Key", "ARN": KEY}],
        request_parameters={"encryptionContext": {"org": str(org.pk), "app": "jira"}},
        error_code=error,
        error_message="The key is disabled." if error else "",
    )


def test_admin_filters_opens_an_event_and_downloads_csv(page, login):
    org = OrganizationFactory(name="Acme Corp")
    admin = org_admin(org)
    wanted = _kms(org, "Decrypt", datetime(2025, 5, 1, 10, 0, tzinfo=UTC), "DisabledException")
    _kms(org, "Encrypt", datetime(2025, 5, 1, 10, 30, tzinfo=UTC))  # other name
    _kms(org, "Decrypt", datetime(2025, 5, 3, 9, 0, tzinfo=UTC))  # outside the range
    _kms(OrganizationFactory(), "Decrypt", datetime(2025, 5, 1, 11, 0, tzinfo=UTC))  # other org

    login(page, admin.email, PASSWORD)
    page.goto(f"/orgs/{org.pk}/audit/")
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()

    page.get_by_label("Event name").fill("Decrypt")
    page.get_by_label("From (UTC)").fill("2025-05-01T00:00")
    page.get_by_label("To (UTC)").fill("2025-05-01T23:59")
    page.get_by_role("button", name="Apply filters").click()

    expect(page).to_have_url(re.compile(r"event_name=Decrypt.*"))
    rows = page.locator("table.audit-events tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("2025-05-01 10:00:00")
    expect(rows.first).to_contain_text("DisabledException")
    expect(page.get_by_role("img", name=re.compile("Audit events by hour"))).to_be_visible()

    rows.first.get_by_role("link", name="Decrypt").click()
    expect(page.get_by_role("heading", name="Decrypt", level=1)).to_be_visible()
    record = page.locator("#record-json")
    expect(record).to_contain_text(f'"eventID": "{wanted.event_id}"')
    expect(record).to_contain_text('"encryptionContext"')

    page.get_by_role("link", name="← Back to the audit log").click()
    expect(page.get_by_label("Event name")).to_have_value("Decrypt")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    download = download_info.value
    assert re.fullmatch(
        rf"audit-{org.pk}-acme-corp-\d{{8}}T\d{{6}}Z\.csv", download.suggested_filename
    )
    with open(download.path(), encoding="utf-8") as handle:
        exported = list(csv.DictReader(io.StringIO(handle.read())))
    assert [(row["eventID"], row["eventName"], row["errorCode"]) for row in exported] == [
        (str(wanted.event_id), "Decrypt", "DisabledException")
    ]
