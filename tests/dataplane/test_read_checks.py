"""Read checks: the BYOK page shows whether each app can read its data, computed by a worker
("Check now" or the beat task), never by opening the page."""

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from dataplane import records
from dataplane.models import AppDataHealth
from dataplane.tasks import check_all_app_reads
from tests.dataplane.test_dataplane import byok_app, connection_of, moto  # noqa: F401
from tests.factories import org_admin

pytestmark = pytest.mark.django_db


def status_row(client, app) -> str:
    page = client.get(reverse("connections:status", args=[app.site.organization_id]))
    html = page.content.decode()
    start = html.index(f'data-app="{app.app}"')
    return html[start : html.index("</tr>", start)]


@pytest.fixture
def admin_client(client):
    app = byok_app()
    records.store_record(app_instance=app, kind="issue", plaintext=b"PROJ-1")
    client.force_login(org_admin(app.site.organization))
    client.app = app
    return client


def test_check_now_reads_every_app_and_the_page_shows_the_result_and_when(
    admin_client, django_capture_on_commit_callbacks
):
    app = admin_client.app
    assert "Not checked yet" in status_row(admin_client, app)

    url = reverse("connections:check-now", args=[app.site.organization_id])
    with django_capture_on_commit_callbacks(execute=True):  # the task is sent on commit
        response = admin_client.post(url)

    assert response.status_code == 302
    health = AppDataHealth.objects.get(app_instance=app)
    assert health.last_check_ok is True and health.last_check_at is not None
    row = status_row(admin_client, app)
    assert "Readable" in row and "checked" in row and "Read issue #" in row
    names = set(AuditEvent.objects.values_list("event_name", flat=True))
    assert {"RequestAppReadCheck", "AppReadCheck"} <= names


def test_check_now_is_a_post_only_action(admin_client):
    url = reverse("connections:check-now", args=[admin_client.app.site.organization_id])
    assert admin_client.get(url).status_code == 405
    assert not AppDataHealth.objects.filter(last_check_at__isnull=False).exists()


def test_the_beat_check_shows_a_revoked_app_as_unreadable_with_the_reason(admin_client):
    app = admin_client.app
    connection = connection_of(app)
    connection.state = "revoked"
    connection.save(update_fields=["state"])

    check_all_app_reads()

    health = AppDataHealth.objects.get(app_instance=app)
    assert health.last_check_ok is False and "revoked" in health.last_check_detail
    assert "Unreadable" in status_row(admin_client, app)
