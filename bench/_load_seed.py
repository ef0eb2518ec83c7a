"""Seeding for ``bench load`` (run as ``python -m bench._load_seed <out.json>`` with the load
launch's environment, DEBUG and the demo app on, after ``seed_demo``): more organizations,
people and history on top of the demo world, so every page the load test opens shows what a
busy tenant's would.

* ``BYOK_ORGS`` Enterprise organizations with BYOK set up as the demo's Acme is (the customer
  side deployed in the moto server from the onboarding kit, an active connection, a BYOK site
  with two or three apps and ``RECORDS_PER_APP`` encrypted records each), each with an org admin;
* ``PROSPECT_ORGS`` Enterprise organizations with a setup request waiting in the reps' queue
  (submitted through the real service, so its preflight runs once the workers are up);
* an audit history: ``EVENTS_PER_ORG`` key-usage and portal events per BYOK org over the last
  ``HISTORY_DAYS`` days (Acme twice as many), through ``audit.services.record_event``, so the
  hash chain and the hourly rollups are the product's own;
* vendor staff (two reps, two support people) with an authenticator app (a TOTP device whose
  key the load test holds, to sign in as a person would), and one for the admin of the
  organization whose access the run revokes (revoking needs two-factor).

Writes what the load test needs (people, passwords, TOTP keys, orgs, app and record ids,
filter values) to the JSON file named on the command line (mode 0600: throw-away local data).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from datetime import timedelta

BYOK_ORGS = 6
PROSPECT_ORGS = 3
RECORDS_PER_APP = 100
EVENTS_PER_ORG = 2500
HISTORY_DAYS = 30
LOCATIONS = ["eu", "us", "au", "ca", "jp", "sg"]
REVOKED_ORG_INDEX = 1  # "Bench Org 01" (Europe: two regions) is the one the run revokes


def _log(message: str) -> None:
    print(f"[bench load seed] {message}", file=sys.stderr, flush=True)


def _user(email: str, full_name: str, password: str, **flags):
    from orgs.models import User

    user, created = User.objects.get_or_create(
        email=email, defaults={"full_name": full_name, **flags}
    )
    if created:
        user.set_password(password)
        user.save(update_fields=["password"])
    return user


def _totp_key(user) -> str:
    """A confirmed authenticator for ``user``: the hex key the load test computes codes from."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="bench phone", confirmed=True)
    return device.key


def _byok_org(index: int, password: str) -> dict:
    from django.db import transaction
    from django.utils import timezone

    from dataplane.records import store_record
    from demo.acme import connect_active_keys
    from orgs.models import AppInstance, Membership, Organization, Site
    from setup.models import SetupRequest

    name = f"Bench Org {index:02d}"
    location = LOCATIONS[(index - 1) % len(LOCATIONS)]
    account = f"{700000000000 + index:012d}"
    apps = ["jira", "confluence"] + (["jsm"] if index % 2 else [])
    admin_email = f"admin@bench-{index:02d}.example"
    with transaction.atomic():
        org = Organization.objects.create(
            name=name, plan=Organization.Plan.ENTERPRISE, cloud=Organization.Cloud.COMMERCIAL
        )
        admin = _user(admin_email, f"Admin {index:02d}", password)
        Membership.objects.create(user=admin, organization=org, role=Membership.Role.ADMIN)
        member = _user(f"member@bench-{index:02d}.example", f"Member {index:02d}", password)
        Membership.objects.create(user=member, organization=org, role=Membership.Role.MEMBER)
    _connection, key_arns = connect_active_keys(
        org=org, account_id=account, location=location, provisioned_by="bench"
    )
    with transaction.atomic():
        site = Site.objects.create(organization=org, name=f"bench-{index:02d}-secure")
        instances = [
            AppInstance.objects.create(
                site=site,
                app=app,
                encryption=AppInstance.Encryption.BYOK,
                status=AppInstance.Status.ACTIVE,
            )
            for app in apps
        ]
        SetupRequest.objects.create(
            organization=org,
            requested_by=admin,
            aws_account_id=account,
            site_name=site.name,
            location=location,
            apps=sorted(apps),
            status=SetupRequest.Status.PROVISIONED,
            closed_at=timezone.now(),
        )
    records = {}
    for instance in instances:
        kind = "page" if instance.app == "confluence" else "issue"

        def store(n, instance=instance, kind=kind):
            body = {"key": f"B{index}-{n}", "summary": f"Bench {kind} {n}", "body": "x" * 600}
            plaintext = json.dumps(body).encode()
            return store_record(app_instance=instance, kind=kind, plaintext=plaintext).pk

        # The first write creates the app's data key (a KMS call, audited in a transaction of
        # its own); the rest reuse it, in one transaction.
        ids = [store(0)]
        with transaction.atomic():
            ids += [store(n) for n in range(1, RECORDS_PER_APP)]
        records[str(instance.pk)] = ids
    return {
        "id": org.pk,
        "name": name,
        "admin": admin_email,
        "account": account,
        "location": location,
        "key_arns": key_arns,
        "apps": records,
    }


def _prospect(index: int, password: str, rep) -> dict:
    from orgs.models import Membership, Organization
    from setup import services

    org = Organization.objects.create(
        name=f"Bench Prospect {index:02d}",
        plan=Organization.Plan.ENTERPRISE,
        cloud=Organization.Cloud.COMMERCIAL,
    )
    admin = _user(f"admin@prospect-{index:02d}.example", f"Prospect {index:02d}", password)
    Membership.objects.create(user=admin, organization=org, role=Membership.Role.ADMIN)
    request = services.submit_setup_request(
        org=org,
        actor=admin,
        aws_account_id=f"{800000000000 + index:012d}",
        site_name=f"prospect-{index:02d}",
        location=LOCATIONS[index % len(LOCATIONS)],
        apps=["jira", "confluence"],
    )
    if index == 1:
        services.claim_setup_request(request_id=request.pk, rep=rep)
        services.add_internal_note(
            request_id=request.pk, actor=rep, note="Customer is deploying the kit this week."
        )
    return {"id": org.pk, "admin": admin.email, "request": request.pk}


_KMS_CALLS = [("Decrypt", 60), ("GenerateDataKey", 12), ("DescribeKey", 15), ("Encrypt", 5)]
_ERRORS = [("ThrottlingException", "Rate exceeded"), ("AccessDeniedException", "Not authorized")]
_PORTAL = ["SignIn", "ViewByokStatus", "ExportAuditEvents", "RequestReadCheck", "CheckMfa"]


def _history(org, info: dict, events: int, admin) -> None:
    """``events`` audit events over the last ``HISTORY_DAYS`` days, oldest first, appended
    to the org's chain in batches (``audit.services.append_events``: the same links and rollups
    ``record_event`` writes one by one)."""
    from django.db import transaction
    from django.utils import timezone

    from audit.models import AuditEvent
    from audit.services import append_events

    rng = random.Random(org.pk)
    now = timezone.now()
    start = now - timedelta(days=HISTORY_DAYS)
    step = (now - start) / events
    role = f"arn:aws:iam::{info['account']}:role/byok-key-management"
    session = f"arn:aws:sts::{info['account']}:assumed-role/byok-key-management/byok-portal"
    identity = {
        "type": "AssumedRole",
        "principalId": "AROAEXAMPLEBENCH:byok-portal",
        "arn": session,
        "accountId": info["account"],
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role}},
    }
    names, weights = zip(*_KMS_CALLS, strict=True)
    regions = list(info["key_arns"])
    batch = []
    for n in range(events):
        moment = start + step * n
        if rng.random() < 0.1:
            batch.append(
                dict(
                    actor=admin,
                    event_name=rng.choice(_PORTAL),
                    source_ip="203.0.113.7",
                    event_time=moment,
                    request_id=str(uuid.uuid4()),
                )
            )
        else:
            region = rng.choice(regions)
            key_arn = info["key_arns"][region]
            error = _ERRORS[rng.randrange(2)] if rng.random() < 0.02 else ("", "")
            context = {"org": str(org.pk), "app": rng.choice(list(info["apps"]))}
            batch.append(
                dict(
                    kind=AuditEvent.Kind.KEY_USAGE,
                    event_name=rng.choices(names, weights)[0],
                    event_source="kms.amazonaws.com",
                    aws_region=region,
                    user_identity=identity,
                    request_parameters={"keyId": key_arn, "encryptionContext": context},
                    resources=[{"type": "AWS::KMS::Key", "ARN": key_arn}],
                    error_code=error[0],
                    error_message=error[1],
                    read_only=True,
                    source_ip="byok-portal.vendor.example",
                    user_agent="byok-portal/1.0 boto3",
                    recipient_account_id=info["account"],
                    event_time=moment,
                    request_id=str(uuid.uuid4()),
                )
            )
        if len(batch) == 1000 or n == events - 1:
            with transaction.atomic():
                append_events(org=org, events=batch)
            batch = []


def seed(out_path: str) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group

    from demo.acme import ACME_AWS_ACCOUNT
    from orgs.models import AppInstance, Organization, User
    from orgs.staff_roles import ACCOUNT_REPS, SUPPORT_STAFF
    from setup.models import SetupRequest

    started = time.monotonic()
    password = settings.DEMO_PASSWORD
    reps, supports = [], []
    for n, (group, people) in enumerate([(ACCOUNT_REPS, reps), (SUPPORT_STAFF, supports)]):
        kind = ("rep", "support")[n]
        for email in (f"{kind}@vendor.example", f"{kind}2@vendor.example"):
            user = _user(email, email.split("@")[0].title(), password, is_staff=True)
            user.groups.add(Group.objects.get(name=group))
            people.append({"email": email, "totp_key": _totp_key(user)})

    orgs = [_byok_org(index, password) for index in range(1, BYOK_ORGS + 1)]
    _log(f"{len(orgs)} BYOK orgs with records in {time.monotonic() - started:.1f} s")
    rep = User.objects.get(email=reps[0]["email"])
    prospects = [_prospect(index, password, rep) for index in range(1, PROSPECT_ORGS + 1)]

    acme = Organization.objects.get(name="Acme Corp")
    acme_info = {
        "id": acme.pk,
        "name": acme.name,
        "admin": "admin@acme.example",
        "account": ACME_AWS_ACCOUNT,
        "key_arns": {k.region: k.key_arn for k in acme.byok_connection.keys.all()},
        "apps": {
            str(app.pk): list(app.records.order_by("pk").values_list("pk", flat=True))
            for app in AppInstance.objects.filter(
                site__organization=acme, encryption=AppInstance.Encryption.BYOK
            )
        },
    }
    history_started = time.monotonic()
    for info, events in [(acme_info, 2 * EVENTS_PER_ORG)] + [(o, EVENTS_PER_ORG) for o in orgs]:
        org = Organization.objects.get(pk=info["id"])
        _history(org, info, events, User.objects.get(email=info["admin"]))
    _log(f"audit history in {time.monotonic() - history_started:.1f} s")

    revoked = orgs[REVOKED_ORG_INDEX - 1]
    revoker = User.objects.get(email=revoked["admin"])
    globex = Organization.objects.get(name="Globex")
    admins = [{"email": o["admin"], "org": o["id"]} for o in [acme_info, *orgs]]
    admins += [{"email": p["admin"], "org": p["id"]} for p in prospects]
    admins.append({"email": "other-admin@globex.example", "org": globex.pk})
    out = {
        "password": password,
        "admins": admins,
        "reps": reps,
        "supports": supports,
        "revoker": {"email": revoker.email, "totp_key": _totp_key(revoker)},
        "revoked_org": {"id": revoked["id"], "name": revoked["name"]},
        "byok_orgs": [acme_info, *orgs],
        "requests": list(SetupRequest.objects.order_by("pk").values_list("pk", flat=True)),
        "event_names": [name for name, _ in _KMS_CALLS] + _PORTAL[:2],
        "regions": sorted({r for o in [acme_info, *orgs] for r in o["key_arns"]}),
    }
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(out, handle)
    _log(f"seeded in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    seed(sys.argv[1])
