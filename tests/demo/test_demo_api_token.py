"""``make run`` prints a working read-only API token and a curl that lists audit events."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from scripts.run_demo import api_lines

pytestmark = pytest.mark.django_db


def test_demo_token_lists_acmes_audit_events(settings):
    settings.DEBUG = True
    call_command("seed_demo", stdout=StringIO())
    out = StringIO()
    call_command("demo_api_token", stdout=out)
    api = json.loads(out.getvalue())
    answer = Client().get(
        f"/api/v1/orgs/{api['org_id']}/audit/events?limit=5",
        HTTP_AUTHORIZATION=f"Bearer {api['token']}",
    )
    assert answer.status_code == 200 and answer.json()["Records"]
    printed = "\n".join(api_lines(api))
    assert f"Bearer {api['token']}" in printed and "/audit/events" in printed
    assert "/api-tokens/" in printed


def test_demo_token_refused_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError):
        call_command("demo_api_token", stdout=StringIO())
