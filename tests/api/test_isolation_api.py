"""Tenant isolation of the REST API: every API route × every token scope × every token holder.

Parametrised over the URL patterns themselves (every route under ``api/v1/orgs``), so a new
API route is probed the moment it exists, and ``test_every_api_route_has_object_ids`` names a
route whose URL kwargs this test cannot fill with the victim's real objects.

The attacker's tokens: the other org's admin's token with each scope alone and with all of
them (valid: the victim's organization is a 404, exactly like a missing one), and dead tokens
(expired, revoked, the creator no longer an admin, the creator now vendor staff: 401). Each
request is made with GET and POST. Afterwards: the victim's rows are unchanged, the audit log
has nothing new, and no answer shows the victim's names, keys, accounts or event ids. Then the
attacker's own organization with the victim's object ids: never the object.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from api.models import SCOPES, ApiToken
from api.services import revoke_api_token
from orgs.models import Membership
from tests.api.support import bearer, make_token
from tests.factories import org_admin
from tests.isolation_support import (
    all_routes,
    audit_failures,
    audit_mark,
    build_url,
    build_world,
    changed_models,
    fingerprint,
    kwarg_names,
)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

API_ROUTES = [r for r in all_routes() if r.route.startswith("api/v1/orgs")]
#: URL kwarg → the victim world's object that fills it (per route where it differs).
OBJECT_IDS = {"request_id": "setup_request", "event_id": "audit_event"}
ROUTE_OBJECT_IDS = {"api:reencryption-request": {"request_id": "reencryption"}}
SCOPE_SETS = [[scope] for scope in SCOPES] + [list(SCOPES)]
ALL_SCOPES = "valid:" + "+".join(SCOPES)
DEAD = ("expired", "revoked", "demoted", "now_staff")
#: Bodies that would act were the request to reach the victim (an empty one is refused first).
POST_BODIES = {
    "api:byok-revoke": {"reason": "isolation probe"},
    "api:byok-scoped-revocations": {
        "kind": "period",
        "start": "2020-01-01T00:00:00Z",
        "end": "2030-01-01T00:00:00Z",
        "reason": "isolation probe",
    },
    "api:setup-requests": {
        "aws_account_id": "121212121212",
        "site_name": "probe-site-zq",
        "location": "us",
        "apps": ["jira"],
    },
}


def _values(route, world, *, org_id) -> dict[str, str]:
    values = {}
    for name in kwarg_names(route.route):
        if name == "org_id":
            values[name] = str(org_id)
        else:
            obj_name = ROUTE_OBJECT_IDS.get(route.key, {}).get(name) or OBJECT_IDS[name]
            values[name] = world.id_of(obj_name)
    return values


def _tokens(world) -> dict[str, str]:
    """The attacker org's tokens: label → whole token."""
    own, attacker = world.objects["own_org"], world.users["other_admin"]
    tokens = {f"valid:{'+'.join(s)}": make_token(own, attacker, s) for s in SCOPE_SETS}
    tokens["expired"] = make_token(own, attacker, name="expired")
    ApiToken.objects.filter(name="expired").update(expires_at=timezone.now() - timedelta(seconds=1))
    tokens["revoked"] = make_token(own, attacker, name="revoked")
    revoke_api_token(org=own, token_id=ApiToken.objects.get(name="revoked").pk, actor=attacker)
    demoted = org_admin(own)
    tokens["demoted"] = make_token(own, demoted)
    Membership.objects.filter(user=demoted).update(role=Membership.Role.MEMBER)
    turned_staff = org_admin(own)
    tokens["now_staff"] = make_token(own, turned_staff)
    turned_staff.is_staff = True
    turned_staff.save(update_fields=["is_staff"])
    return tokens


def _body(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def test_every_api_route_has_object_ids():
    assert len(API_ROUTES) >= 14
    for route in API_ROUTES:
        for name in kwarg_names(route.route):
            assert name == "org_id" or name in OBJECT_IDS, f"{route.key}: fill {name}"


@pytest.mark.parametrize("route", API_ROUTES, ids=[r.key for r in API_ROUTES])
def test_no_token_reaches_another_orgs_data(route):
    world = build_world()
    tokens = _tokens(world)
    client = Client(raise_request_exception=True)
    sentinels = world.org_sentinels + world.secret_sentinels
    failures = []
    state, mark = fingerprint(world), audit_mark()
    for passes in ("victim org", "own org, victim objects"):
        own_org = passes.startswith("own")
        if own_org and kwarg_names(route.route) in ([], ["org_id"]):
            continue  # nothing of the victim's in the URL: the attacker's own org, by design
        org_id = world.objects["own_org"].pk if own_org else world.victim.pk
        url = build_url(route, _values(route, world, org_id=org_id))
        for label, token in tokens.items():
            for method in ("get", "post"):
                data = POST_BODIES.get(route.key, {}) if method == "post" else None
                if method == "post":
                    response = client.post(
                        url, data, content_type="application/json", **bearer(token)
                    )
                else:
                    response = client.get(url, **bearer(token))
                where = f"{method.upper()} {url} with {label} ({passes})"
                code = response.status_code
                if label in DEAD:
                    expected = {401}
                elif "org_id" not in kwarg_names(route.route):
                    expected = {200, 405}  # the token's own organization (no victim sentinel)
                elif own_org and label == ALL_SCOPES:
                    expected = {404, 405}  # never the object (405: GET-only, POST-only)
                elif own_org:
                    expected = {403, 404, 405}  # never the object; 403: the scope, not the id
                else:
                    expected = {404}
                if code not in expected:
                    failures.append(f"{where}: {code}, expected {sorted(expected)}")
                leaked = [s for s in sentinels if s in _body(response)]
                if leaked:
                    failures.append(f"{where}: shows {leaked}")
                after = fingerprint(world)
                if changed := changed_models(state, after):
                    failures.append(f"{where}: changed the victim's {changed}")
                for problem in audit_failures(world, mark, attacker_org_may_act=False):
                    failures.append(f"{where}: audit log: {problem}")
                state, mark = after, audit_mark()
    assert not failures, f"{len(failures)} isolation failures:\n" + "\n".join(failures)


def test_the_token_list_shows_only_the_tokens_own_org():
    world = build_world()
    token = make_token(world.objects["own_org"], world.users["other_admin"], ["read"])
    answer = Client().get("/api/v1/orgs", **bearer(token))
    assert [o["id"] for o in answer.json()] == [world.objects["own_org"].pk]
    assert not [s for s in world.org_sentinels if s in answer.content.decode()]
