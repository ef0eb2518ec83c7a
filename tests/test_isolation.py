"""Tenant isolation, proven over every URL the resolver knows.

For each URL pattern (walked from ``get_resolver()``, the admin's included), each of six roles
and both GET and POST, with every id in the URL naming a real object of an organization the
user does not administer ("the victim"), the answer must be what the rule table below says: a
sign-in redirect, 403 or 404 for outsiders — never a 500, and never a body with the victim's
data. An outsider's POST to an object-scoped, POST-only view is a 404, not a redirect.

After every request a role may not make (any request of a customer or a visitor; a staff
member's where their rule shuts them out), the victim's objects must be unchanged (every field
of every row: ``isolation_support.fingerprint``), and the audit log must hold nothing new but
sign-in bookkeeping: nothing in the victim's log, nothing in the attacker's org or the vendor
log, nothing anywhere that names the victim's objects.

Adding a URL: give its name a rule in ``RULES`` (or its kwarg a value in ``KWARG_OBJECTS``).
A URL without a rule fails ``test_every_url_pattern_has_a_rule``, naming it.

The Django admin is one family (every pattern under ``admin/``): vendor staff only. Anonymous
visitors and customers get a sign-in redirect or 403 there, never a page; staff may get any
answer but a 500 (support staff see every org by design).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import resolve

from audit.services import record_event
from orgs.models import Organization
from tests.isolation_support import (
    VICTIM_SCOPE,
    AuditEvent,
    Route,
    World,
    all_routes,
    audit_failures,
    audit_mark,
    build_url,
    build_world,
    changed_models,
    fingerprint,
    kwarg_names,
    object_exists,
    regex_choices,
)
from tests.support import login_staff

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

ROLES = ("anonymous", "member", "other_admin", "rep", "support", "superuser")
STAFF_ROLES = {"rep", "support", "superuser"}

# --- Outcome classes -----------------------------------------------------------------------
LOGIN = "login"  # a redirect to the portal's sign-in (or the admin's, which leads there)
REDIRECT = "redirect"  # any other redirect (a form's "done", a 2FA or re-auth detour …)
OK = "2xx"
BAD = "400"
FORBIDDEN = "403"
NOT_FOUND = "404"
NOT_ALLOWED = "405"
LOCKED = "429"
#: The view was reached and answered as it likes (page, form error, redirect after a POST).
REACHED = frozenset({OK, REDIRECT, BAD, NOT_ALLOWED})


@dataclass(frozen=True)
class Rule:
    """Allowed outcome classes per role. ``ids`` overrides which victim object fills a kwarg."""

    anonymous: frozenset[str]
    member: frozenset[str]
    other_admin: frozenset[str]
    rep: frozenset[str]
    support: frozenset[str]
    superuser: frozenset[str]
    ids: dict[str, str] = field(default_factory=dict)

    def allowed(self, role: str) -> frozenset[str]:
        return getattr(self, role)


def rule(*, anonymous, member, other_admin, rep, support, superuser, ids=None) -> Rule:
    def f(value):
        return frozenset({value}) if isinstance(value, str) else frozenset(value)

    return Rule(
        f(anonymous), f(member), f(other_admin), f(rep), f(support), f(superuser), ids or {}
    )


PUBLIC = rule(
    anonymous=REACHED, member=REACHED, other_admin=REACHED, rep=REACHED, support=REACHED,
    superuser=REACHED,
)  # fmt: skip
SIGNED_IN = rule(
    anonymous=LOGIN, member=REACHED, other_admin=REACHED, rep=REACHED, support=REACHED,
    superuser=REACHED,
)  # fmt: skip
# The login page: a form for visitors (a wrong POST may be throttled), a redirect for users.
LOGIN_PAGE = rule(
    anonymous={OK, LOCKED}, member=REDIRECT, other_admin=REDIRECT, rep=REDIRECT,
    support=REDIRECT, superuser=REDIRECT,
)  # fmt: skip
LOGOUT = rule(
    anonymous={LOGIN, NOT_ALLOWED}, member={LOGIN, NOT_ALLOWED}, other_admin={LOGIN, NOT_ALLOWED},
    rep={LOGIN, NOT_ALLOWED}, support={LOGIN, NOT_ALLOWED}, superuser={LOGIN, NOT_ALLOWED},
)  # fmt: skip
# The org's overview: its members see it; anyone else gets 404 (staff use the admin).
ORG_MEMBER = rule(
    anonymous=LOGIN, member=REACHED, other_admin=NOT_FOUND, rep=NOT_FOUND, support=NOT_FOUND,
    superuser=NOT_FOUND,
)  # fmt: skip
# Key management and audit: the org's admins only. Members 403, everyone else 404.
ORG_ADMIN = rule(
    anonymous=LOGIN, member=FORBIDDEN, other_admin=NOT_FOUND, rep=NOT_FOUND, support=NOT_FOUND,
    superuser=NOT_FOUND,
)  # fmt: skip
ORG_ADMIN_REENCRYPTION = Rule(**{**ORG_ADMIN.__dict__, "ids": {"request_id": "reencryption"}})
# The account reps' queue: reps (and superusers) work every org's requests by design.
ACCOUNT_REP = rule(
    anonymous=LOGIN, member=FORBIDDEN, other_admin=FORBIDDEN, rep=REACHED, support=FORBIDDEN,
    superuser=REACHED,
)  # fmt: skip
ACCOUNT_REP_REENCRYPTION = Rule(**{**ACCOUNT_REP.__dict__, "ids": {"request_id": "reencryption"}})
# The Django admin, as one family: vendor staff only, and no 500 even for them.
# (LOGIN: the admin's log-out URL signs them out and sends them to the sign-in page.)
STAFF_ANSWERS = frozenset({OK, REDIRECT, BAD, FORBIDDEN, NOT_FOUND, NOT_ALLOWED, LOGIN})
# (REDIRECT: /admin/logout/ sends visitors to /admin/, which sends them to sign in.)
ADMIN_FAMILY = rule(
    anonymous={LOGIN, REDIRECT}, member={LOGIN, FORBIDDEN, REDIRECT},
    other_admin={LOGIN, FORBIDDEN, REDIRECT},
    rep=STAFF_ANSWERS, support=STAFF_ANSWERS, superuser=STAFF_ANSWERS,
)  # fmt: skip

# /metrics: the scraper's bearer token only, never a session: 401 (or 404 while no token is
# configured) for every role, staff included.
SCRAPER_ONLY = rule(
    anonymous={"401", NOT_FOUND}, member={"401", NOT_FOUND}, other_admin={"401", NOT_FOUND},
    rep={"401", NOT_FOUND}, support={"401", NOT_FOUND}, superuser={"401", NOT_FOUND},
)  # fmt: skip

# The REST API answers org API tokens only, never a session: 401 for every signed-in role.
# (Tokens themselves: tests/api/test_isolation_api.py, every API route × scope × role.)
API_TOKEN_ONLY = rule(
    anonymous="401", member="401", other_admin="401", rep="401", support="401", superuser="401",
)  # fmt: skip

RULES: dict[str, Rule] = {
    # Public: health, sign-in, the audit trust endpoints.
    "healthz": PUBLIC,
    "metrics": SCRAPER_ONLY,
    "audit:public-key": PUBLIC,
    "audit:verifier": PUBLIC,
    "login": LOGIN_PAGE,
    "logout": LOGOUT,
    # Any signed-in person, about themselves only.
    "orgs:dashboard": SIGNED_IN,
    "password_change": SIGNED_IN,
    "password_change_done": SIGNED_IN,
    "security:two-factor-setup": SIGNED_IN,
    "security:two-factor-verify": SIGNED_IN,
    "security:reauthenticate": SIGNED_IN,
    # Organizations.
    "orgs:overview": ORG_MEMBER,
    # BYOK key management.
    "connections:status": ORG_ADMIN,
    "setup:new": ORG_ADMIN,
    "connections:revoke": ORG_ADMIN,
    "connections:check-now": ORG_ADMIN,
    "connections:revoke-progress": ORG_ADMIN,
    "connections:restore": ORG_ADMIN,
    "connections:revoke-site": ORG_ADMIN,
    "connections:revoke-app": ORG_ADMIN,
    "connections:revoke-period": ORG_ADMIN,
    "connections:restore-scope": ORG_ADMIN,
    "setup:request": ORG_ADMIN,
    "setup:request-preflight": ORG_ADMIN,
    "setup:kit": ORG_ADMIN,
    "setup:kit-template": ORG_ADMIN,
    "reencryption:request": ORG_ADMIN,
    "reencryption:template": ORG_ADMIN,
    "reencryption:detail": ORG_ADMIN_REENCRYPTION,
    "reencryption:progress": ORG_ADMIN_REENCRYPTION,
    "reencryption:preflight": ORG_ADMIN_REENCRYPTION,
    "reencryption:cancel": ORG_ADMIN_REENCRYPTION,
    # Audit log and its integrations.
    "audit:list": ORG_ADMIN,
    "audit:event": ORG_ADMIN,
    "integrations:index": ORG_ADMIN,
    "integrations:source": ORG_ADMIN,
    "integrations:import": ORG_ADMIN,
    "integrations:webhook": ORG_ADMIN,
    "integrations:webhook-test": ORG_ADMIN,
    "integrations:webhook-delete": ORG_ADMIN,
    "integrations:delivery-retry": ORG_ADMIN,
    "integrations:acknowledge-unexplained": ORG_ADMIN,
    # Account representatives' pages.
    # The REST API, its public schema and docs, and the org admins' API tokens page.
    "api:schema": PUBLIC,
    "api:docs": PUBLIC,
    "api:tokens": ORG_ADMIN,
    "api:token-revoke": ORG_ADMIN,
    **{
        f"api:{name}": API_TOKEN_ONLY
        for name in (
            "orgs",
            "org",
            "byok",
            "byok-revoke",
            "byok-scoped-revocations",
            "sites",
            "setup-requests",
            "setup-request",
            "audit-events",
            "audit-event",
            "audit-export",
            "cloudtrail-source",
            "webhook",
        )
    },  # fmt: skip
    "api:reencryption-requests": API_TOKEN_ONLY,
    "api:reencryption-request": Rule(
        **{**API_TOKEN_ONLY.__dict__, "ids": {"request_id": "reencryption"}}
    ),
    "review:queue": ACCOUNT_REP,
    "setup:staff-detail": ACCOUNT_REP,
    "setup:staff-preflight": ACCOUNT_REP,
    "setup:staff-claim": ACCOUNT_REP,
    "setup:staff-run-preflight": ACCOUNT_REP,
    "setup:staff-provision": ACCOUNT_REP,
    "setup:staff-reject": ACCOUNT_REP,
    "setup:staff-note": ACCOUNT_REP,
    "reencryption:staff-detail": ACCOUNT_REP_REENCRYPTION,
    "reencryption:staff-progress": ACCOUNT_REP_REENCRYPTION,
    "reencryption:staff-preflight": ACCOUNT_REP_REENCRYPTION,
    "reencryption:staff-claim": ACCOUNT_REP_REENCRYPTION,
    "reencryption:staff-run-preflight": ACCOUNT_REP_REENCRYPTION,
    "reencryption:staff-approve": ACCOUNT_REP_REENCRYPTION,
    "reencryption:staff-reject": ACCOUNT_REP_REENCRYPTION,
}


def rule_for(route: Route) -> Rule | None:
    if route.key in RULES:
        return RULES[route.key]
    return ADMIN_FAMILY if route.is_admin else None


#: URL kwarg → the victim world's object whose id fills it (a rule's ``ids`` may override).
KWARG_OBJECTS = {
    "org_id": "org",
    "request_id": "setup_request",
    "event_id": "audit_event",
    "delivery_id": "delivery",
    "job_id": "reencryption_job",
    "site_id": "site",
    "app_id": "app",
    "revocation_id": "scoped_revocation",
    "token_id": "api_token",
}
#: URL kwargs that are not object ids.
KWARG_VALUES = {"region": "us-east-1", "url": "no-such-page/"}
#: POST bodies that would make the view act, were it to reach the victim's object: an empty
#: POST is refused by the form, which would hide an unscoped action.
POST_DATA = {
    "reencryption:cancel": {"confirm": "on"},
    "setup:staff-reject": {"reason": "isolation probe"},
    "setup:staff-note": {"note": "isolation probe"},
    "reencryption:staff-reject": {"reason": "isolation probe"},
}


@pytest.fixture
def world(db) -> World:
    return build_world()


def sign_in(client: Client, world: World, role: str) -> None:
    user = world.users[role]
    if user is None:
        return
    if role in STAFF_ROLES:
        login_staff(client, user)
    else:
        client.force_login(user)


def admin_object(route: Route, world: World):
    """The victim's row of the admin page's model (any real row for a vendor-wide model)."""
    model = route.model or Organization  # the admin's "view on site" shortcut: the org's
    mine = world.admin_objects()
    if model in mine:
        return mine[model]
    return model._default_manager.order_by("pk").first()


def kwargs_for(route: Route, rule: Rule, world: World, *, org_id: str | None = None):
    """The URL's values, and a list of problems (a kwarg without value, an id with no row)."""
    values, problems = {}, []
    for name in kwarg_names(route.route):
        obj = None
        if name == "org_id" and org_id is not None:
            values[name] = org_id
        elif name in rule.ids or name in KWARG_OBJECTS:
            obj = world.objects[rule.ids.get(name) or KWARG_OBJECTS[name]]
            values[name] = world.id_of(rule.ids.get(name) or KWARG_OBJECTS[name])
        elif name in KWARG_VALUES:
            values[name] = KWARG_VALUES[name]
        elif name in ("object_id", "id"):
            obj = admin_object(route, world)
            values[name] = str(obj.pk) if obj is not None else "no-such-row"
            if obj is None:
                problems.append(f"no {route.model or Organization} row for {name}")
        elif name == "content_type_id":
            values[name] = str(ContentType.objects.get_for_model(Organization).pk)
        elif name == "app_label":
            values[name] = (regex_choices(route.route, name) or ["orgs"])[0]
        else:
            problems.append(f"no value for URL kwarg {name} (add it to KWARG_*)")
        if obj is not None and not object_exists(obj):
            problems.append(f"{name}={values[name]} names no existing {type(obj).__name__}")
    return values, problems


def object_kwargs(route: Route, rule: Rule) -> list[str]:
    """The route's kwargs that name an object (other than the org)."""
    return [
        n
        for n in kwarg_names(route.route)
        if n != "org_id" and (n in rule.ids or n in KWARG_OBJECTS)
    ]


def classify(response) -> str:
    code = response.status_code
    if code in (301, 302, 303, 307, 308):
        location = urlsplit(response["Location"]).path
        if location.startswith(("/accounts/login/", "/admin/login/")):
            return LOGIN
        return REDIRECT
    if 200 <= code < 300:
        return OK
    return str(code)


def body_of(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def sentinels_for(role: str, world: World) -> list[str]:
    if role in STAFF_ROLES:
        return []  # vendor staff see every org by design (where their rule lets them in)
    if role == "member":
        return world.secret_sentinels
    return world.org_sentinels + world.secret_sentinels


def probe(role: str, world: World, *, own_org_pass: bool = False) -> list[str]:
    """Every route × GET/POST as ``role``; returns the failures, one line each."""
    client = Client(raise_request_exception=True)
    sign_in(client, world, role)
    failures: list[str] = []
    own_org_id = str(world.objects["own_org"].pk) if own_org_pass else None
    state, mark = fingerprint(world), audit_mark()
    for route in all_routes():
        rule = rule_for(route)
        if rule is None:
            continue  # reported by test_every_url_pattern_has_a_rule
        if own_org_pass and "org_id" not in kwarg_names(route.route):
            continue
        values, problems = kwargs_for(route, rule, world, org_id=own_org_id)
        if problems:
            failures.extend(f"{route.key}: {p}" for p in problems)
            continue
        url = build_url(route, values)
        if resolve(urlsplit(url).path).func is not route.pattern.callback:
            failures.append(f"{route.key}: built {url}, which resolves elsewhere")
            continue
        allowed = rule.allowed(role)
        foreign = bool(object_kwargs(route, rule))
        for method in ("get", "post"):
            if own_org_pass and rule.anonymous != API_TOKEN_ONLY.anonymous:
                # The user's own org with the victim's object ids: never the object, and no
                # "done" redirect either (a POST-only view answers GET with 405).
                allowed = (
                    frozenset({NOT_FOUND, NOT_ALLOWED} if method == "get" else {NOT_FOUND})
                    if foreign
                    else REACHED
                )
            # May this request change anything? Staff their rule lets in may (by design).
            guarded = role not in STAFF_ROLES or not (allowed & REACHED)
            data = POST_DATA.get(route.key, {}) if method == "post" else {}
            try:
                response = getattr(client, method)(url, data, REMOTE_ADDR="10.9.9.9")
            except Exception as exc:  # noqa: BLE001 — every crash is reported, not just the first
                failures.append(f"{method.upper()} {url} [{route.key}]: raised {exc!r}")
                sign_in(client, world, role)
                state, mark = fingerprint(world), audit_mark()
                continue
            where = f"{method.upper()} {url} [{route.key}]"
            outcome = classify(response)
            if outcome not in allowed:
                to = f" → {response['Location']}" if outcome in (LOGIN, REDIRECT) else ""
                failures.append(f"{where}: {outcome}{to}, expected one of {sorted(allowed)}")
            leaked = [s for s in sentinels_for(role, world) if s in body_of(response)]
            if leaked:
                failures.append(f"{where}: shows {leaked}")
            if role != "anonymous" and "_auth_user_id" not in client.session:
                sign_in(client, world, role)  # a log-out URL signed the user out
            after = fingerprint(world)
            if guarded:
                changed = changed_models(state, after)
                if changed:
                    failures.append(f"{where}: changed the victim's {', '.join(changed)}")
                attacker_org_may_act = own_org_pass and not foreign
                for problem in audit_failures(
                    world, mark, attacker_org_may_act=attacker_org_may_act
                ):
                    failures.append(f"{where}: audit log: {problem}")
            state, mark = after, audit_mark()
    return failures


def test_every_url_pattern_has_a_rule():
    missing = sorted({r.key for r in all_routes() if rule_for(r) is None})
    assert not missing, (
        "URL patterns without an isolation rule (add them to RULES in tests/test_isolation.py): "
        + ", ".join(missing)
    )


def test_rules_name_only_existing_urls():
    names = {r.key for r in all_routes()}
    stale = sorted(set(RULES) - names)
    assert not stale, f"rules for URL names that no longer exist: {', '.join(stale)}"


def test_the_walk_covers_the_admin_and_every_app():
    routes = all_routes()
    assert len(routes) > 60
    assert any(r.key == "admin:connections_byokconnection_changelist" for r in routes)
    assert any(r.key.startswith("unnamed:admin/") for r in routes)  # e.g. the catch-all


def test_every_url_kwarg_names_a_real_object_of_the_victim(world):
    """No dummy ids: each object kwarg is an existing row, and the victim's where it can be."""
    problems, victim = [], world.victim
    for route in all_routes():
        rule = rule_for(route)
        if rule is None:
            continue
        values, found = kwargs_for(route, rule, world)
        problems += [f"{route.key}: {p}" for p in found]
        if values.get("org_id") not in (None, str(victim.pk)):
            problems.append(f"{route.key}: org_id is not the victim's")
    assert set(VICTIM_SCOPE) <= set(world.admin_objects())  # admin pages show the victim's
    assert all(object_exists(obj) for obj in world.objects.values())
    assert not problems, "\n".join(problems)


def test_the_fingerprint_sees_a_change_to_any_victim_object(world):
    """The safety net itself: a changed field, a new row or a victim audit event all show."""
    before = fingerprint(world)
    assert all(before.values()), [name for name, rows in before.items() if not rows]
    job = world.objects["reencryption_job"]
    job.state = "cancelled"
    job.save(update_fields=["state"])
    assert changed_models(before, fingerprint(world)) == ["ReencryptionJob (1→1 rows)"]
    mark = audit_mark()
    record_event(org=world.objects["own_org"], event_name="RetryWebhookDelivery")
    assert audit_failures(world, mark, attacker_org_may_act=False)
    assert not audit_failures(world, mark, attacker_org_may_act=True)
    assert AuditEvent.objects.filter(pk__gt=mark).count() == 1


@pytest.mark.parametrize("role", ROLES)
def test_no_role_reaches_another_orgs_data(world, role):
    failures = probe(role, world)
    assert not failures, f"{len(failures)} isolation failures as {role}:\n" + "\n".join(failures)


def test_an_admin_cannot_reach_another_orgs_objects_through_their_own_org(world):
    failures = probe("other_admin", world, own_org_pass=True)
    assert not failures, f"{len(failures)} isolation failures:\n" + "\n".join(failures)
