"""The audit log page and the event detail page, as an org admin uses them."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from audit import views
from audit.services import record_event
from tests.factories import PASSWORD, OrganizationFactory, org_admin, org_member

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
KEY_A = "arn:aws:kms:us-east-1:111122223333:key/aaaaaaaa-0000-0000-0000-000000000001"
KEY_B = "arn:aws:kms:us-west-2:111122223333:key/bbbbbbbb-0000-0000-0000-000000000002"


def login(client, user):
    assert client.login(username=user.email, password=PASSWORD)


def kms_event(org, name="Decrypt", *, at, key=KEY_A, region="us-east-1", error="", **kwargs):
    return record_event(
        org=org,
        kind="key-usage",
        event_name=name,
        event_source="kms.amazonaws.com",
        event_time=at,
        aws_region=region,
        user_identity={
            "type": "AssumedRole",
            "arn": "arn:aws:sts::111122223333:assumed-role/byok-key-management/byok-portal",
        },
        resources=[{"type": "AWS::KMS::Key", "ARN": key}],
        request_parameters={"encryptionContext": {"org": str(org.pk)}},
        error_code=error,
        error_message="The key is disabled." if error else "",
        **kwargs,
    )


@pytest.fixture(autouse=True)
def _no_sign_in_events():
    """Signing the test client in records a ConsoleLogin event; these tests count events."""
    from django.contrib.auth.signals import user_logged_in

    from audit.signals import record_login

    user_logged_in.disconnect(record_login)
    yield
    user_logged_in.connect(record_login)


@pytest.fixture
def org():
    return OrganizationFactory(name="Acme Corp")


@pytest.fixture
def admin_client(client, org):
    login(client, org_admin(org))
    return client


def names_on(response) -> list[str]:
    """Event names in the table, top to bottom (the detail links' text)."""
    html = response.content.decode()
    return re.findall(r'<a href="/orgs/\d+/audit/events/[0-9a-f-]+/[^"]*">([^<]+)</a>', html)


def listed_ids(response) -> list[str]:
    html = response.content.decode()
    return re.findall(r'<a href="/orgs/\d+/audit/events/([0-9a-f-]+)/', html)


def link(response, rel) -> str | None:
    match = re.search(rf'rel="{rel}" href="([^"]*)"', response.content.decode())
    return match.group(1).replace("&amp;", "&") if match else None


# --- who may see what -----------------------------------------------------------------------


def test_member_gets_403_on_list_detail_and_export(client, org):
    event = kms_event(org, at=T0)
    login(client, org_member(org))
    url = reverse("audit:list", args=[org.pk])
    assert client.get(url).status_code == 403
    assert client.get(url, {"format": "csv"}).status_code == 403
    assert client.get(reverse("audit:event", args=[org.pk, event.event_id])).status_code == 403


def test_admin_of_another_org_gets_404_on_list_detail_and_export(client, org):
    event = kms_event(org, at=T0)
    login(client, org_admin())
    url = reverse("audit:list", args=[org.pk])
    assert client.get(url).status_code == 404
    assert client.get(url, {"format": "json"}).status_code == 404
    assert client.get(reverse("audit:event", args=[org.pk, event.event_id])).status_code == 404


def test_admin_gets_404_for_another_orgs_event_under_their_own_org(admin_client, org):
    other_event = kms_event(OrganizationFactory(), at=T0, name="SecretOtherOrgCall")
    response = admin_client.get(reverse("audit:event", args=[org.pk, other_event.event_id]))
    assert response.status_code == 404
    assert b"SecretOtherOrgCall" not in response.content


def test_list_never_shows_another_orgs_events(admin_client, org):
    kms_event(org, at=T0, name="MineDecrypt")
    kms_event(OrganizationFactory(), at=T0, name="TheirDecrypt")
    record_event(org=None, event_name="VendorWideEvent", event_time=T0)
    response = admin_client.get(reverse("audit:list", args=[org.pk]))
    assert names_on(response) == ["MineDecrypt"]


def test_anonymous_visitor_is_sent_to_login(client, org):
    response = client.get(reverse("audit:list", args=[org.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


# --- the list ---------------------------------------------------------------------------------


def test_events_are_listed_newest_first_with_their_kind(admin_client, org):
    record_event(org=org, event_name="SetupRequested", event_time=T0)
    kms_event(org, "GenerateDataKey", at=T0 + timedelta(minutes=1))
    record_event(
        org=org, kind="ingested", event_name="DisableKey", event_time=T0 + timedelta(minutes=2)
    )
    response = admin_client.get(reverse("audit:list", args=[org.pk]))
    assert names_on(response) == ["DisableKey", "GenerateDataKey", "SetupRequested"]
    html = response.content.decode()
    for badge in ("badge-portal", "badge-key-usage", "badge-ingested"):
        assert badge in html


TRAIL_FILE = (
    "s3://acme-trail/AWSLogs/111122223333/CloudTrail/us-east-1/2025/05/01/"
    "111122223333_CloudTrail_us-east-1_20250501T1200Z_x1.json.gz"
)


def imported_event(org, name="DisableKey", *, at, source="kms.amazonaws.com"):
    """An event imported from the customer's trail, as ingestion records it."""
    record = {
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/alice"},
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
    }
    return record_event(
        org=org, kind="ingested", event_name=name, record=record, imported_from=TRAIL_FILE
    )


def row_of(response, name) -> str:
    html = response.content.decode()
    rows = re.findall(r"<tr[^>]*>.*?</tr>", html, flags=re.S)
    return next(row for row in rows if f">{name}</a>" in row)


def test_list_marks_imported_events_with_their_file_apart_from_the_portals_own(admin_client, org):
    record_event(org=org, event_name="SetupRequested", event_time=T0)
    kms_event(org, "GenerateDataKey", at=T0 + timedelta(minutes=1))
    imported_event(org, at=T0 + timedelta(minutes=2))

    response = admin_client.get(reverse("audit:list", args=[org.pk]))

    imported = row_of(response, "DisableKey")
    assert "Imported from your CloudTrail" in imported
    assert "111122223333_CloudTrail_us-east-1_20250501T1200Z_x1.json.gz</code>" in imported
    assert f'title="{TRAIL_FILE}"' in imported
    for name in ("SetupRequested", "GenerateDataKey"):
        row = row_of(response, name)
        assert "Recorded by the portal" in row and "Imported" not in row


def test_detail_says_an_imported_event_came_from_the_customers_trail(admin_client, org):
    event = imported_event(org, at=T0, source="byok.portal.vendor.example")

    html = admin_client.get(reverse("audit:event", args=[org.pk, event.event_id])).content.decode()

    assert "Imported from your CloudTrail." in html
    assert f"<code>{TRAIL_FILE}</code>" in html
    assert "it is not something the portal recorded" in html


def test_detail_of_the_portals_own_event_says_the_portal_recorded_it(admin_client, org):
    event = kms_event(org, at=T0)

    html = admin_client.get(reverse("audit:event", args=[org.pk, event.event_id])).content.decode()

    assert "Recorded by the portal (the vendor&#x27;s call to your AWS account)" in html
    assert "Imported from your CloudTrail" not in html


def test_empty_log_has_a_helpful_empty_state(admin_client, org):
    response = admin_client.get(reverse("audit:list", args=[org.pk]))
    assert response.status_code == 200
    assert "No events yet." in response.content.decode()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"event_name": "Encrypt"}, {"encrypt-a"}),
        ({"event_source": "sts.amazonaws.com"}, {"assume"}),
        ({"principal": "someone@acme.example"}, {"portal"}),
        ({"resource": KEY_B}, {"decrypt-b"}),
        ({"region": "us-west-2"}, {"decrypt-b"}),
        ({"errors_only": "on"}, {"decrypt-error"}),
        ({"request_id": "req-42"}, {"encrypt-a"}),
        ({"from": "2025-05-01T12:30", "to": "2025-05-01T13:10"}, {"decrypt-b", "assume"}),
        ({"from": "2025-05-01T13:00"}, {"assume", "portal", "decrypt-error"}),
        ({"to": "2025-05-01T12:10"}, {"encrypt-a"}),
    ],
)
def test_each_filter_narrows_the_list(admin_client, org, params, expected):
    tags = {}
    tags["encrypt-a"] = kms_event(org, "Encrypt", at=T0, request_id="req-42")
    tags["decrypt-b"] = kms_event(org, at=T0 + timedelta(minutes=40), key=KEY_B, region="us-west-2")
    tags["assume"] = record_event(
        org=org,
        kind="key-usage",
        event_name="AssumeRole",
        event_source="sts.amazonaws.com",
        event_time=T0 + timedelta(minutes=60),
    )
    portal_user = org_admin(org, user__email="someone@acme.example")
    tags["portal"] = record_event(
        org=org, event_name="RevokeRequested", actor=portal_user, event_time=T0 + timedelta(hours=2)
    )
    tags["decrypt-error"] = kms_event(org, at=T0 + timedelta(hours=3), error="DisabledException")
    by_id = {str(event.event_id): tag for tag, event in tags.items()}

    response = admin_client.get(reverse("audit:list", args=[org.pk]), params)

    assert response.status_code == 200
    assert {by_id[i] for i in listed_ids(response)} == expected


def test_filters_combine(admin_client, org):
    kms_event(org, at=T0, error="DisabledException", name="Decrypt")
    kms_event(org, at=T0 + timedelta(minutes=1), name="Decrypt")
    kms_event(org, at=T0 + timedelta(minutes=2), error="DisabledException", name="Encrypt")
    kms_event(org, at=T0 + timedelta(days=2), error="DisabledException", name="Decrypt")
    response = admin_client.get(
        reverse("audit:list", args=[org.pk]),
        {
            "event_name": "Decrypt",
            "errors_only": "on",
            "region": "us-east-1",
            "from": "2025-05-01T00:00",
            "to": "2025-05-01T23:59",
        },
    )
    assert names_on(response) == ["Decrypt"]
    assert len(listed_ids(response)) == 1


def test_filter_form_keeps_its_values_for_a_bookmarkable_url(admin_client, org):
    response = admin_client.get(
        reverse("audit:list", args=[org.pk]),
        {"event_name": "Decrypt", "from": "2025-05-01T12:00", "errors_only": "on"},
    )
    html = response.content.decode()
    assert 'method="get"' in html
    assert 'value="Decrypt"' in html
    assert 'type="datetime-local" name="from" value="2025-05-01T12:00"' in html
    assert re.search(r'name="errors_only"[^>]*checked', html)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "yesterday"}, "Enter a date and time like"),
        ({"from": "2025-05-02T00:00", "to": "2025-05-01T00:00"}, "must be after its start"),
        ({"from": "0001-01-01T00:00"}, "between 1970 and 8999"),
        ({"region": "US EAST"}, "AWS region code"),
        ({"resource": "not-an-arn"}, "Enter a full ARN"),
        ({"event_name": "x" * 101}, "at most 100 characters"),
        ({"principal": "nul\x00byte"}, "Null characters are not allowed"),
    ],
)
def test_bad_filter_input_is_a_form_error_not_a_500(admin_client, org, params, message):
    kms_event(org, at=T0)
    response = admin_client.get(reverse("audit:list", args=[org.pk]), params)
    assert response.status_code == 200
    html = response.content.decode()
    assert message in html
    assert "Fix the filters above to see events." in html
    assert listed_ids(response) == []


def test_bad_export_format_is_a_clear_400(admin_client, org):
    response = admin_client.get(reverse("audit:list", args=[org.pk]), {"format": "xml"})
    assert response.status_code == 400
    assert b"use format=csv or format=json" in response.content


def test_export_with_bad_filters_is_a_clear_400_not_an_unfiltered_export(admin_client, org):
    response = admin_client.get(
        reverse("audit:list", args=[org.pk]), {"format": "csv", "region": "nowhere"}
    )
    assert response.status_code == 400
    assert b"region: Enter an AWS region code" in response.content


# --- keyset pagination ------------------------------------------------------------------------


@pytest.fixture
def many_events(org, monkeypatch):
    monkeypatch.setattr(views, "PAGE_SIZE", 5)
    return [kms_event(org, f"Call{i:02d}", at=T0 + timedelta(minutes=i)) for i in range(12)]


def test_older_and_newer_links_walk_the_list_without_offset(admin_client, org, many_events):
    url = reverse("audit:list", args=[org.pk])
    first = admin_client.get(url)
    assert names_on(first) == ["Call11", "Call10", "Call09", "Call08", "Call07"]
    assert link(first, "prev") is None

    second = admin_client.get(url + link(first, "next"))
    assert names_on(second) == ["Call06", "Call05", "Call04", "Call03", "Call02"]
    third = admin_client.get(url + link(second, "next"))
    assert names_on(third) == ["Call01", "Call00"]
    assert link(third, "next") is None

    back = admin_client.get(url + link(third, "prev"))
    assert names_on(back) == names_on(second)
    assert names_on(admin_client.get(url + link(back, "prev"))) == names_on(first)


def test_paging_is_stable_when_newer_events_arrive_between_page_loads(
    admin_client, org, many_events
):
    url = reverse("audit:list", args=[org.pk])
    first = admin_client.get(url)
    for i in range(3):  # new events land while the admin reads page 1
        kms_event(org, f"New{i}", at=T0 + timedelta(hours=1, minutes=i))
    second = admin_client.get(url + link(first, "next"))
    third = admin_client.get(url + link(second, "next"))
    seen = names_on(first) + names_on(second) + names_on(third)
    assert seen == [f"Call{i:02d}" for i in range(11, -1, -1)]  # no repeat, no gap


def test_events_with_the_same_time_are_neither_repeated_nor_skipped(admin_client, org, monkeypatch):
    monkeypatch.setattr(views, "PAGE_SIZE", 3)
    events = [kms_event(org, f"Tie{i}", at=T0) for i in range(7)]
    url = reverse("audit:list", args=[org.pk])
    response, seen = admin_client.get(url), []
    while True:
        seen += listed_ids(response)
        older = link(response, "next")
        if older is None:
            break
        response = admin_client.get(url + older)
    assert seen == [str(e.event_id) for e in reversed(events)]


def test_pagination_keeps_the_filters(admin_client, org, many_events):
    for i in range(6):
        kms_event(org, "Encrypt", at=T0 + timedelta(minutes=30 + i))
    url = reverse("audit:list", args=[org.pk])
    first = admin_client.get(url, {"event_name": "Encrypt"})
    older = link(first, "next")
    assert parse_qs(urlsplit(older).query)["event_name"] == ["Encrypt"]
    assert names_on(admin_client.get(url + older)) == ["Encrypt"]


@pytest.mark.parametrize("param", ["after", "before"])
@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),
        lambda token: "x" + token,
        lambda token: token[: len(token) // 2],
        lambda token: "garbage",
        lambda token: "a" * 5000,
    ],
)
def test_tampered_cursor_shows_the_first_page_with_a_notice(
    admin_client, org, many_events, param, tamper
):
    url = reverse("audit:list", args=[org.pk])
    first = admin_client.get(url)
    token = parse_qs(urlsplit(link(first, "next")).query)["after"][0]
    response = admin_client.get(url, {param: tamper(token)})
    assert response.status_code == 200
    assert names_on(response) == names_on(first)
    assert "That page link was not valid" in response.content.decode()


def test_event_detail_shows_the_whole_record_as_json(admin_client, org):
    event = kms_event(org, at=T0, request_id="req-detail")
    response = admin_client.get(reverse("audit:event", args=[org.pk, event.event_id]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<pre" in html
    assert "&quot;encryptionContext&quot;: {" in html  # indented JSON, escaped in HTML
    assert "&quot;eventID&quot;: &quot;" + str(event.event_id) in html
    assert event.hash in html


def test_unknown_event_id_is_404(admin_client, org):
    response = admin_client.get(reverse("audit:event", args=[org.pk, uuid.uuid4()]))
    assert response.status_code == 404


def test_detail_link_returns_to_the_same_filtered_list(admin_client, org):
    event = kms_event(org, at=T0)
    url = reverse("audit:list", args=[org.pk])
    listing = admin_client.get(url, {"event_name": "Decrypt"})
    detail_href = re.search(
        r'href="(/orgs/\d+/audit/events/[^"]+)"', listing.content.decode()
    ).group(1)
    detail = admin_client.get(detail_href.replace("&amp;", "&"))
    assert str(event.event_id) in detail_href
    assert f'href="{url}?event_name=Decrypt"' in detail.content.decode()


def test_pages_carry_no_inline_style_for_the_csp(admin_client, org):
    kms_event(org, at=T0, error="DisabledException")
    event = kms_event(org, at=T0 + timedelta(minutes=5))
    pages = [
        admin_client.get(reverse("audit:list", args=[org.pk]), {"from": "2025-05-01T00:00"}),
        admin_client.get(reverse("audit:event", args=[org.pk, event.event_id])),
    ]
    for response in pages:
        html = response.content.decode()
        assert " style=" not in html
        assert "<style" not in html
        assert "<script>" not in html


def test_page_runs_a_fixed_number_of_queries(admin_client, org, django_assert_max_num_queries):
    for i in range(30):
        kms_event(org, at=T0 + timedelta(minutes=i))
    # session, user, staff permissions (two-factor is by what a user can do), org, role, page,
    # chart, the vendor's calls by day (2 aggregates and the trail source) and the
    # unexplained-call banner: a constant, whatever the number of events
    with django_assert_max_num_queries(13):
        response = admin_client.get(reverse("audit:list", args=[org.pk]))
    assert response.status_code == 200
