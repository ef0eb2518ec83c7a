"""Helpers of ``tests/test_isolation.py``: the URL walk, the victim's world and its fingerprint.

The victim org gets a real row of every model a URL kwarg (or an admin page) can point at, so
every id in a probed URL names an existing object of the victim. ``fingerprint`` is every
concrete field of every victim row, per model: a probe compares it before and after a request.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.db import connection as db
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from api.models import ApiToken
from api.services import create_api_token
from audit.models import (
    AuditEvent,
    ChainDigest,
    CloudTrailSource,
    IngestedFile,
    WebhookDelivery,
    WebhookEndpoint,
)
from audit.services import record_event
from connections.models import (
    ByokConnection,
    DataKey,
    DataKeyWrapping,
    RegionalKey,
    ScopedRevocation,
)
from dataplane.models import AppDataHealth, AppRecord
from orgs.models import AppInstance, Membership, Organization, Site, User
from orgs.staff_roles import ACCOUNT_REPS, SUPPORT_STAFF
from reencryption.models import (
    ReencryptionEvent,
    ReencryptionJob,
    ReencryptionPreflight,
    ReencryptionRequest,
)
from setup.models import PreflightRun, RequestEvent, SetupRequest
from tests.factories import (
    AppInstanceFactory,
    OrganizationFactory,
    SiteFactory,
    UserFactory,
    org_admin,
    org_member,
    staff_user,
)
from tests.support import totp_device

ADMIN_PREFIX = "admin/"

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


# --- The victim's world ----------------------------------------------------------------------

SENTINEL_ACCOUNT = "777788889999"
SENTINEL_KEY = f"arn:aws:kms:us-east-1:{SENTINEL_ACCOUNT}:key/0badc0de-aaaa-bbbb-cccc-000000000001"
NEW_KEY = f"arn:aws:kms:us-east-1:{SENTINEL_ACCOUNT}:key/0badc0de-aaaa-bbbb-cccc-000000000002"

#: Every model with rows of the victim, and the lookup from a row to its organization.
#: (ChainHead is left out: its head moves with every link, which the audit checks cover.)
VICTIM_SCOPE = {
    Organization: "pk",
    Membership: "organization",
    User: "memberships__organization",
    Site: "organization",
    AppInstance: "site__organization",
    ByokConnection: "organization",
    RegionalKey: "connection__organization",
    SetupRequest: "organization",
    RequestEvent: "request__organization",
    PreflightRun: "request__organization",
    ReencryptionRequest: "organization",
    ReencryptionPreflight: "request__organization",
    ReencryptionJob: "request__organization",
    ReencryptionEvent: "request__organization",
    DataKey: "app_instance__site__organization",
    DataKeyWrapping: "data_key__app_instance__site__organization",
    AppRecord: "app_instance__site__organization",
    AppDataHealth: "app_instance__site__organization",
    AuditEvent: "organization",
    ChainDigest: "organization",
    CloudTrailSource: "organization",
    IngestedFile: "source__organization",
    WebhookEndpoint: "organization",
    WebhookDelivery: "endpoint__organization",
    ApiToken: "organization",
}
#: Fields that legitimately move without anyone acting on the victim's data.
VOLATILE_FIELDS = {User: {"last_login"}}


@dataclass
class World:
    objects: dict[str, object]  # the victim's objects by name ("own_org" is the attacker's)
    users: dict[str, object]
    org_sentinels: list[str]  # the victim org's name and sites: its members may see them
    secret_sentinels: list[str]  # BYOK and audit details: its admins (and vendor staff) only
    queries: list | None = None  # the fingerprint's SQL, compiled on first use

    @property
    def victim(self) -> Organization:
        return self.objects["org"]

    def id_of(self, name: str) -> str:
        obj = self.objects[name]
        return str(obj.event_id if isinstance(obj, AuditEvent) else obj.pk)

    def admin_objects(self) -> dict[type, object]:
        """Model → the victim's row of it (the first named one wins)."""
        found: dict[type, object] = {}
        for name, obj in self.objects.items():
            if name != "own_org":
                found.setdefault(type(obj), obj)
        return found


def build_world() -> World:
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
    wrapping = DataKeyWrapping.objects.create(
        data_key=data_key, regional_key=key, region="us-east-1", blob=b"wrapped"
    )
    record = AppRecord.objects.create(
        app_instance=app, kind="issue", data_key=data_key, ciphertext=b"sealed"
    )
    health = AppDataHealth.objects.create(app_instance=app, last_read_at=timezone.now())
    setup_request = SetupRequest.objects.create(
        organization=victim,
        requested_by=victim_admin,
        aws_account_id=SENTINEL_ACCOUNT,
        site_name="victim-next-zq",
        location="us",
        apps=["confluence"],
    )
    preflight = PreflightRun.objects.create(
        request=setup_request, status="passed", finished_at=timezone.now()
    )
    note = RequestEvent.objects.create(
        request=setup_request, kind="note", message="victim-note-zq", internal=True
    )
    # An approved re-encryption with its scheduled job: the customer may still cancel it.
    reencryption = ReencryptionRequest.objects.create(
        organization=victim,
        connection=connection,
        requested_by=victim_admin,
        key_alias="alias/victim-rekey-zq",
        key_arns={"us-east-1": NEW_KEY},
        status="approved",
        approved_at=timezone.now(),
    )
    re_preflight = ReencryptionPreflight.objects.create(
        request=reencryption,
        status="passed",
        key_arns={"us-east-1": NEW_KEY},
        finished_at=timezone.now(),
    )
    job = ReencryptionJob.objects.create(
        request=reencryption,
        connection=connection,
        mode=reencryption.mode,
        scheduled_for=timezone.now() + dt.timedelta(days=2),
        batch_size=100,
        old_keys=[key.pk],
    )
    re_event = ReencryptionEvent.objects.create(
        request=reencryption, kind="approved", message="victim-rekey-note-zq"
    )
    event = record_event(
        org=victim,
        event_name="VictimSentinelEvent",
        actor=victim_admin,
        resources=[{"type": "AWS::KMS::Key", "ARN": SENTINEL_KEY}],
    )
    digest = ChainDigest.objects.create(
        chain=event.chain,
        organization=victim,
        sequence=event.sequence,
        head_hash=event.hash,
        signed_at=timezone.now(),
        key_id="victim-key-zq",
        signature="c2lnbmF0dXJl",
    )
    source = CloudTrailSource.objects.create(
        organization=victim, bucket="victim-trail-zq", prefix="AWSLogs/", region="us-east-1"
    )
    ingested = IngestedFile.objects.create(
        source=source, key="AWSLogs/victim-file-zq.json.gz", etag="e1", status="imported"
    )
    endpoint = WebhookEndpoint.objects.create(
        organization=victim, url="https://siem.victim.example/hook", secret_encrypted="x"
    )
    # Failed: a retry would change it, so an unscoped retry shows in the fingerprint.
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event=event, status="failed", attempts=5, last_status_code=500
    )

    # A revoked period of the victim's data: an unscoped restore would show in the fingerprint.
    scoped_revocation = ScopedRevocation.objects.create(
        organization=victim,
        kind="period",
        period_from=timezone.now() - dt.timedelta(days=2),
        period_to=timezone.now() - dt.timedelta(days=1),
        revoked_by=victim_admin,
        revoked_at=timezone.now(),
        restore_deadline=timezone.now() + dt.timedelta(days=15),
        reason="victim-scope-zq",
    )
    scoped_revocation.data_keys.set([data_key])

    # The throttle's records of the victim admin's sign-ins (not the probe's address: no lockout).
    seen = {"username": victim_admin.email, "ip_address": "10.7.7.7", "user_agent": "zq"}
    attempt = AccessAttempt.objects.create(
        **seen, get_data="", post_data="", failures_since_start=0
    )
    access_log = AccessLog.objects.create(**seen)
    failure_log = AccessFailureLog.objects.create(**seen)

    # The other org: an admin with data of their own, so their pages have something to show.
    other = OrganizationFactory(name="Other Org")
    other_admin = org_admin(other)
    SiteFactory(organization=other, name="other-site")
    ByokConnection.objects.create(
        organization=other, aws_account_id="121212121212", location="us", state="active"
    )
    record_event(org=other, event_name="OtherOrgEvent", actor=other_admin)
    api_token, _whole = create_api_token(
        org=victim,
        actor=victim_admin,
        name="victim-token-zq",
        scopes=["read"],
        expires_at=timezone.now() + dt.timedelta(days=30),
    )

    return World(
        objects={
            "org": victim,
            "own_org": other,
            "victim_admin": victim_admin,
            "membership": victim_admin.memberships.get(),
            "site": site,
            "app": app,
            "connection": connection,
            "key": key,
            "data_key": data_key,
            "wrapping": wrapping,
            "scoped_revocation": scoped_revocation,
            "record": record,
            "data_health": health,
            "setup_request": setup_request,
            "preflight": preflight,
            "request_event": note,
            "reencryption": reencryption,
            "reencryption_preflight": re_preflight,
            "reencryption_job": job,
            "reencryption_event": re_event,
            "audit_event": event,
            "digest": digest,
            "cloudtrail_source": source,
            "ingested_file": ingested,
            "webhook": endpoint,
            "delivery": delivery,
            "totp_device": totp_device(victim_admin),
            "access_attempt": attempt,
            "access_log": access_log,
            "access_failure_log": failure_log,
            "api_token": api_token,
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
            "victim-rekey-zq",
            "VictimSentinelEvent",
            str(event.event_id),
            "siem.victim.example",
            "victim-trail-zq",
            "victim-token-zq",
        ],
    )


def object_exists(obj) -> bool:
    if isinstance(obj, AuditEvent):
        return AuditEvent.objects.filter(event_id=obj.event_id, pk=obj.pk).exists()
    return type(obj)._default_manager.filter(pk=obj.pk).exists()


# --- Fingerprints and the audit log ----------------------------------------------------------


def _victim_queries(org_pk: int) -> list[tuple[str, str, tuple]]:
    """(model name, SQL, params) selecting every victim row of each model, compiled once."""
    queries = []
    for model, lookup in VICTIM_SCOPE.items():
        skip = VOLATILE_FIELDS.get(model, set())
        fields = [f.attname for f in model._meta.concrete_fields if f.attname not in skip]
        rows = model._default_manager.filter(**{lookup: org_pk}).distinct().order_by("pk")
        if model is AuditEvent:
            rows = rows.exclude(event_name__in=SIGN_IN_EVENTS)
        elif model is WebhookDelivery:  # the probe's own sign-in bookkeeping, sent to the SIEM
            rows = rows.exclude(event__event_name__in=SIGN_IN_EVENTS)
        sql, params = rows.values_list(*fields).query.get_compiler(using=rows.db).as_sql()
        queries.append((model.__name__, sql, tuple(params)))
    return queries


def fingerprint(world: World) -> dict[str, list[tuple]]:
    """Every concrete field of every victim row, per model (rows in pk order)."""
    if world.queries is None:
        world.queries = _victim_queries(world.victim.pk)
    prints: dict[str, list[tuple]] = {}
    with db.cursor() as cursor:
        for name, sql, params in world.queries:
            cursor.execute(sql, params)
            prints[name] = [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in cursor.fetchall()
            ]
    return prints


def changed_models(before: dict, after: dict) -> list[str]:
    out = []
    for name, rows in before.items():
        if after[name] != rows:
            out.append(f"{name} ({len(rows)}→{len(after[name])} rows)")
    return out


#: Sign-in bookkeeping: a sign-in or -out, a failed code, a re-authentication. The probe causes
#: them itself (a log-out URL ends the session and the probe signs back in; the sign-in page
#: records a failed attempt), about the probing user, never about the victim's objects.
SIGN_IN_EVENTS = {"ConsoleLogin", "ConsoleLogout", "CheckMfa", "Reauthenticate", "EnableMFADevice"}


def audit_mark() -> int:
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    return last or 0


def audit_failures(world: World, mark: int, *, attacker_org_may_act: bool) -> list[str]:
    """Events recorded since ``mark`` that a request about the victim must not have caused.

    None in the victim's org (the victim's log is untouched), none in the attacker's org or the
    vendor log (nothing was done; only sign-in bookkeeping, which never names the victim), and
    none anywhere that names the victim's objects. ``attacker_org_may_act``: the request was
    about the attacker's own org only (their own pages may record what they do there).
    """
    victim = world.victim
    out = []
    for event in AuditEvent.objects.filter(pk__gt=mark).order_by("pk"):
        where = (
            "the victim's log"
            if event.organization_id == victim.pk
            else "the vendor log"
            if event.organization_id is None
            else f"org {event.organization_id}'s log"
        )
        text = f"{event.record} {event.key_arn} {event.principal}"
        named = [s for s in world.secret_sentinels + world.org_sentinels if s in text]
        if named:
            out.append(f"{event.event_name} in {where} names {named}")
        elif event.event_name in SIGN_IN_EVENTS:
            continue
        elif event.organization_id == victim.pk or not attacker_org_may_act:
            out.append(f"{event.event_name} in {where}")
    return out
