"""Tenant isolation, proven over every URL the resolver knows.

For each URL pattern (walked from ``get_resolver()``, the admin's included), each of six roles
and both GET and POST, with every id in the URL taken from an organization the user does not
administer ("the victim"), the answer must be what the rule table below says: a sign-in
redirect, 403 or 404 for outsiders — never a 500, and never a body with the victim's data.
Customers' requests must also leave no trace in the victim's audit log (nothing was done).

Adding a URL: give its name a rule in ``RULES`` (or its kwarg a value in ``KWARG_OBJECTS``).
A URL without a rule fails ``test_every_url_pattern_has_a_rule``, naming it.

The Django admin is one family (every pattern under ``admin/``): vendor staff only. Anonymous
visitors and customers get a sign-in redirect or 403 there, never a page; staff may get any
answer but a 500 (support staff see every org by design).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone

from audit.models import AuditEvent, WebhookDelivery, WebhookEndpoint
from audit.services import record_event
from keys.models import (
    ByokConnection,
    DataKey,
    DataKeyWrapping,
    PreflightRun,
    RegionalKey,
    RequestEvent,
    SetupRequest,
)
from orgs.models import Organization
from orgs.staff_roles import ACCOUNT_REPS, SUPPORT_STAFF
from tests.factories import (
    AppInstanceFactory,
    OrganizationFactory,
    SiteFactory,
    UserFactory,
    org_admin,
    org_member,
    staff_user,
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

RULES: dict[str, Rule] = {
    # Public: health, sign-in, the audit trust endpoints.
    "healthz": PUBLIC,
    "audit-public-key": PUBLIC,
    "audit-verifier": PUBLIC,
    "login": LOGIN_PAGE,
    "logout": LOGOUT,
    # Any signed-in person, about themselves only.
    "dashboard": SIGNED_IN,
    "password_change": SIGNED_IN,
    "password_change_done": SIGNED_IN,
    "two-factor-setup": SIGNED_IN,
    "two-factor-verify": SIGNED_IN,
    "reauthenticate": SIGNED_IN,
    # Organizations.
    "org-overview": ORG_MEMBER,
    # BYOK key management.
    "byok-status": ORG_ADMIN,
    "byok-setup": ORG_ADMIN,
    "byok-revoke": ORG_ADMIN,
    "byok-revoke-progress": ORG_ADMIN,
    "byok-restore": ORG_ADMIN,
    "byok-request": ORG_ADMIN,
    "byok-request-preflight-fragment": ORG_ADMIN,
    "byok-onboarding-kit": ORG_ADMIN,
    "byok-onboarding-template": ORG_ADMIN,
    "byok-reencrypt": ORG_ADMIN,
    "byok-reencrypt-template": ORG_ADMIN,
    "byok-reencrypt-detail": ORG_ADMIN_REENCRYPTION,
    "byok-reencrypt-progress": ORG_ADMIN_REENCRYPTION,
    "byok-reencrypt-preflight": ORG_ADMIN_REENCRYPTION,
    "byok-reencrypt-cancel": ORG_ADMIN_REENCRYPTION,
    # Audit log and its integrations.
    "org-audit": ORG_ADMIN,
    "org-audit-event": ORG_ADMIN,
    "audit-integrations": ORG_ADMIN,
    "audit-integrations-source": ORG_ADMIN,
    "audit-integrations-import": ORG_ADMIN,
    "audit-integrations-webhook": ORG_ADMIN,
    "audit-integrations-webhook-test": ORG_ADMIN,
    "audit-integrations-webhook-delete": ORG_ADMIN,
    "audit-integrations-delivery-retry": ORG_ADMIN,
    # Account representatives' pages.
    "staff-requests": ACCOUNT_REP,
    "staff-request-detail": ACCOUNT_REP,
    "staff-request-preflight-fragment": ACCOUNT_REP,
    "staff-request-claim": ACCOUNT_REP,
    "staff-request-run-preflight": ACCOUNT_REP,
    "staff-request-provision": ACCOUNT_REP,
    "staff-request-reject": ACCOUNT_REP,
    "staff-request-note": ACCOUNT_REP,
    "staff-reencryption-detail": ACCOUNT_REP_REENCRYPTION,
    "staff-reencryption-progress": ACCOUNT_REP_REENCRYPTION,
    "staff-reencryption-preflight": ACCOUNT_REP_REENCRYPTION,
    "staff-reencryption-claim": ACCOUNT_REP_REENCRYPTION,
    "staff-reencryption-run-preflight": ACCOUNT_REP_REENCRYPTION,
    "staff-reencryption-approve": ACCOUNT_REP_REENCRYPTION,
    "staff-reencryption-reject": ACCOUNT_REP_REENCRYPTION,
}
ADMIN_PREFIX = "admin/"

#: URL kwarg → the victim world's object whose id fills it (a rule's ``ids`` may override).
KWARG_OBJECTS = {
    "org_id": "org",
    "request_id": "setup_request",
    "event_id": "audit_event",
    "delivery_id": "delivery",
    "job_id": "reencryption_job",
}
#: URL kwargs that are not object ids.
KWARG_VALUES = {"region": "us-east-1", "url": "no-such-page/"}

SIGN_IN_EVENTS = {"ConsoleLogin", "ConsoleLogout", "CheckMfa", "Reauthenticate", "EnableMFADevice"}


# --- The URL patterns ------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    key: str  # the URL name (namespaced), or "unnamed:<route>" for a pattern without one
    route: str  # the full pattern, e.g. "orgs/<int:org_id>/byok/"
    pattern: URLPattern

    @property
    def is_admin(self) -> bool:
        return self.route.startswith(ADMIN_PREFIX)

    @property
    def model(self):
        model_admin = getattr(self.pattern.callback, "model_admin", None)
        return model_admin.model if model_admin is not None else None


def _pattern_text(pattern) -> str:
    text = str(pattern.pattern)
    return text.removeprefix("^").removesuffix("$") if text.startswith("^") else text


def all_routes() -> list[Route]:
    routes: list[Route] = []

    def walk(resolver: URLResolver, prefix: str, namespace: str) -> None:
        for entry in resolver.url_patterns:
            text = prefix + _pattern_text(entry)
            if isinstance(entry, URLResolver):
                ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                walk(entry, text, ns)
            else:
                key = f"{namespace}{entry.name}" if entry.name else f"unnamed:{text}"
                routes.append(Route(key=key, route=text, pattern=entry))

    walk(get_resolver(), "", "")
    return routes


def rule_for(route: Route) -> Rule | None:
    if route.key in RULES:
        return RULES[route.key]
    return ADMIN_FAMILY if route.is_admin else None


_PATH_PARAM = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(?P<name>[^>]+)>")


def _fill_regex_groups(text: str, fill) -> str:
    """Replace each ``(?P<name>…)`` group (nested parentheses included) by ``fill(name)``."""
    out, i = [], 0
    while (m := _REGEX_GROUP.search(text, i)) is not None:
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
        out.append(fill(m["name"], text[m.end() : j - 1]))
        i = j
    out.append(text[i:])
    return "".join(out)


def kwarg_names(route: str) -> list[str]:
    names = [m["name"] for m in _REGEX_GROUP.finditer(route)]
    plain = _fill_regex_groups(route, lambda name, body: "")
    return names + [m["name"] for m in _PATH_PARAM.finditer(plain)]


def regex_choices(route: str, name: str) -> list[str]:
    """The alternatives of a regex group like ``(?P<app_label>orgs|keys)``."""
    found: list[str] = []
    _fill_regex_groups(
        route, lambda n, body: (found.extend(body.split("|")) if n == name else None) or ""
    )
    return found


def build_url(route: Route, values: dict[str, str]) -> str:
    """The route with its parameters filled in (regex groups and path converters alike)."""
    text = _fill_regex_groups(route.route, lambda name, body: values[name])
    text = _PATH_PARAM.sub(lambda m: values[m["name"]], text)
    return "/" + text.replace("\\", "")


# --- The victim's world and the six roles --------------------------------------------------


SENTINEL_ACCOUNT = "777788889999"
SENTINEL_KEY = f"arn:aws:kms:us-east-1:{SENTINEL_ACCOUNT}:key/0badc0de-aaaa-bbbb-cccc-000000000001"


@dataclass
class World:
    objects: dict[str, object]
    users: dict[str, object]
    org_sentinels: list[str]  # the victim org's name and sites: its members may see them
    secret_sentinels: list[str]  # BYOK and audit details: its admins (and vendor staff) only

    def id_of(self, name: str) -> str:
        obj = self.objects.get(name)
        if obj is None:
            return "999999"
        return str(obj.event_id if isinstance(obj, AuditEvent) else obj.pk)


def _reencryption(org, connection, requested_by):
    """A re-encryption request and job of the victim, if the models exist (issue 6)."""
    from keys import models as key_models

    request = job = None
    if hasattr(key_models, "ReencryptionRequest"):
        request = key_models.ReencryptionRequest.objects.create(
            organization=org, connection=connection, requested_by=requested_by
        )
    return request, job


@pytest.fixture
def world(db) -> World:
    victim = OrganizationFactory(name="Victim Org ZQ")
    victim_admin = org_admin(victim)
    member = org_member(victim)
    connection = ByokConnection.objects.create(
        organization=victim, aws_account_id=SENTINEL_ACCOUNT, location="us", state="active"
    )
    key = RegionalKey.objects.create(
        connection=connection, region="us-east-1", key_arn=SENTINEL_KEY, status="enabled"
    )
    site = SiteFactory(organization=victim, name="victim-site-zq")
    app = AppInstanceFactory(site=site, app="jira", encryption="byok")
    data_key = DataKey.objects.create(app_instance=app, encryption_context={"org": "victim"})
    DataKeyWrapping.objects.create(
        data_key=data_key, regional_key=key, region="us-east-1", blob=b"wrapped"
    )
    setup_request = SetupRequest.objects.create(
        organization=victim,
        requested_by=victim_admin,
        aws_account_id=SENTINEL_ACCOUNT,
        site_name="victim-next-zq",
        location="us",
        apps=["confluence"],
    )
    PreflightRun.objects.create(request=setup_request, status="passed", finished_at=timezone.now())
    RequestEvent.objects.create(
        request=setup_request, kind="note", message="victim-note-zq", internal=True
    )
    event = record_event(
        org=victim,
        event_name="VictimSentinelEvent",
        actor=victim_admin,
        resources=[{"type": "AWS::KMS::Key", "ARN": SENTINEL_KEY}],
    )
    endpoint = WebhookEndpoint.objects.create(
        organization=victim, url="https://siem.victim.example/hook", secret_encrypted="x"
    )
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=event)
    reencryption, job = _reencryption(victim, connection, victim_admin)

    # The other org: an admin with data of their own, so their pages have something to show.
    other = OrganizationFactory(name="Other Org")
    other_admin = org_admin(other)
    SiteFactory(organization=other, name="other-site")
    ByokConnection.objects.create(
        organization=other, aws_account_id="121212121212", location="eu", state="active"
    )
    record_event(org=other, event_name="OtherOrgEvent", actor=other_admin)

    return World(
        objects={
            "org": victim,
            "own_org": other,
            "connection": connection,
            "setup_request": setup_request,
            "audit_event": event,
            "delivery": delivery,
            "reencryption": reencryption,
            "reencryption_job": job,
            "data_key": data_key,
            "key": key,
        },
        users={
            "anonymous": None,
            "member": member,
            "other_admin": other_admin,
            "rep": staff_user(ACCOUNT_REPS),
            "support": staff_user(SUPPORT_STAFF),
            "superuser": UserFactory(is_staff=True, is_superuser=True),
        },
        org_sentinels=["Victim Org ZQ", "victim-site-zq"],
        secret_sentinels=[
            SENTINEL_ACCOUNT,
            SENTINEL_KEY,
            "victim-next-zq",
            "victim-note-zq",
            "VictimSentinelEvent",
            str(event.event_id),
            "siem.victim.example",
        ],
    )


def sign_in(client: Client, world: World, role: str) -> None:
    user = world.users[role]
    if user is None:
        return
    if role in STAFF_ROLES:
        login_staff(client, user)
    else:
        client.force_login(user)


def admin_object_id(route: Route, world: World) -> str:
    model = route.model
    if model is None:
        return "999999"
    mine = {type(obj): obj for obj in world.objects.values() if obj is not None}
    if model in mine:
        return str(mine[model].pk)
    if model is Organization:
        return str(world.objects["org"].pk)
    first = model._default_manager.order_by("pk").first()
    return str(first.pk) if first is not None else "999999"


def kwargs_for(route: Route, rule: Rule, world: World, *, org_id: str | None = None):
    values, unknown = {}, []
    for name in kwarg_names(route.route):
        if name in rule.ids:
            values[name] = world.id_of(rule.ids[name])
        elif name == "org_id" and org_id is not None:
            values[name] = org_id
        elif name in KWARG_OBJECTS:
            values[name] = world.id_of(KWARG_OBJECTS[name])
        elif name in KWARG_VALUES:
            values[name] = KWARG_VALUES[name]
        elif name in ("object_id", "id"):
            values[name] = admin_object_id(route, world)
        elif name == "content_type_id":
            values[name] = str(ContentType.objects.get_for_model(Organization).pk)
        elif name == "app_label":
            values[name] = (regex_choices(route.route, name) or ["orgs"])[0]
        else:
            unknown.append(name)
    return values, unknown


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


def victim_actions(world: World) -> int:
    """The victim's audit events other than sign-ins: what anyone did to or in the org."""
    return (
        AuditEvent.objects.filter(organization=world.objects["org"])
        .exclude(event_name__in=SIGN_IN_EVENTS)
        .count()
    )


def probe(role: str, world: World, *, own_org_pass: bool = False) -> list[str]:
    """Every route × GET/POST as ``role``; returns the failures, one line each."""
    client = Client(raise_request_exception=True)
    sign_in(client, world, role)
    failures: list[str] = []
    before = victim_actions(world)
    own_org_id = str(world.objects["own_org"].pk) if own_org_pass else None
    for route in all_routes():
        rule = rule_for(route)
        if rule is None:
            continue  # reported by test_every_url_pattern_has_a_rule
        if own_org_pass and "org_id" not in kwarg_names(route.route):
            continue
        values, unknown = kwargs_for(route, rule, world, org_id=own_org_id)
        if unknown:
            failures.append(f"{route.key}: no value for URL kwargs {unknown} (add to KWARG_*)")
            continue
        url = build_url(route, values)
        if resolve(urlsplit(url).path).func is not route.pattern.callback:
            failures.append(f"{route.key}: built {url}, which resolves elsewhere")
            continue
        allowed = rule.allowed(role)
        if own_org_pass:
            foreign = [n for n in kwarg_names(route.route) if n != "org_id"]
            # The user's own org with another org's object ids: never the object.
            allowed = frozenset({NOT_FOUND, REDIRECT, BAD, NOT_ALLOWED}) if foreign else REACHED
        for method in ("get", "post"):
            try:
                response = getattr(client, method)(url, REMOTE_ADDR="10.9.9.9")
            except Exception as exc:  # noqa: BLE001 — every crash is reported, not just the first
                failures.append(f"{method.upper()} {url} [{route.key}]: raised {exc!r}")
                sign_in(client, world, role)
                continue
            outcome = classify(response)
            if outcome not in allowed:
                where = f" → {response['Location']}" if outcome in (LOGIN, REDIRECT) else ""
                failures.append(
                    f"{method.upper()} {url} [{route.key}]: {outcome}{where}, "
                    f"expected one of {sorted(allowed)}"
                )
            leaked = [s for s in sentinels_for(role, world) if s in body_of(response)]
            if leaked:
                failures.append(f"{method.upper()} {url} [{route.key}]: shows {leaked}")
            if role != "anonymous" and "_auth_user_id" not in client.session:
                sign_in(client, world, role)  # a log-out URL signed the user out
    if role not in STAFF_ROLES and victim_actions(world) != before:
        failures.append(f"{role}: requests changed the victim org (new audit events)")
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
    assert any(r.key == "admin:keys_byokconnection_changelist" for r in routes)
    assert any(r.key.startswith("unnamed:admin/") for r in routes)  # e.g. the catch-all


@pytest.mark.parametrize("role", ROLES)
def test_no_role_reaches_another_orgs_data(world, role):
    failures = probe(role, world)
    assert not failures, f"{len(failures)} isolation failures as {role}:\n" + "\n".join(failures)


def test_an_admin_cannot_reach_another_orgs_objects_through_their_own_org(world):
    failures = probe("other_admin", world, own_org_pass=True)
    assert not failures, f"{len(failures)} isolation failures:\n" + "\n".join(failures)
