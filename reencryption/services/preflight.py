"""Preflight of a re-encryption request's new keys: the setup checks (``setup.checks``) plus
"the key is in the connected account", "the key is new" and a ReEncrypt from the current key.

Runs are started by the assignee, executed by a worker outside any transaction and finished
with the row locked (``review.services``: lost runs, begin/finish, idempotency).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import replace

from django.db import transaction

from audit.services import record_event, user_identity_for
from connections import aws
from connections.key_usage import recorder_for
from connections.models import ByokConnection, RegionalKey
from core.tasks import enqueue_on_commit
from reencryption.models import (
    ReencryptionEvent,
    ReencryptionPreflight,
    ReencryptionRequest,
)
from reencryption.services.requests import (
    ReencryptionRefused,
    _locked,
    _require_assignee,
    _resources,
)
from review import services as review
from setup import checks as setup_checks
from setup.onboarding import REPLACEMENT_KEY_ALIAS

log = logging.getLogger(__name__)
PREFLIGHT_WORKER = "byok-portal re-encryption preflight"


# --- Preflight of the new keys -----------------------------------------------------------------


@transaction.atomic
def start_reencryption_preflight(*, request_id: int, actor) -> ReencryptionPreflight:
    req = _locked(request_id)
    _require_assignee(req, actor)
    review.clear_active_runs(req.preflights.all(), refused=ReencryptionRefused)
    run = ReencryptionPreflight.objects.create(request=req, started_by=actor)
    ReencryptionEvent.objects.create(
        request=req,
        kind="preflight",
        actor=actor,
        message=f"Preflight #{run.pk} started: checking the new keys.",
    )
    record_event(
        org=req.organization,
        actor=actor,
        event_name="StartReencryptionPreflight",
        request_parameters={"requestId": req.pk, "preflightId": run.pk},
        resources=_resources(req),
    )
    enqueue_on_commit("reencryption.tasks.run_reencryption_preflight_task", run.pk)
    return run


def execute_reencryption_preflight(*, preflight_id: int) -> ReencryptionPreflight:
    """Run a queued preflight (AWS calls outside transactions); idempotent."""
    run, started = review.begin_run(model=ReencryptionPreflight, run_id=preflight_id)
    if not started:
        return run
    req = ReencryptionRequest.objects.select_related("organization", "connection").get(
        pk=run.request_id
    )
    connection, org = req.connection, req.organization
    context = {"org": str(org.pk), "purpose": "reencryption-preflight"}
    try:
        report = setup_checks.run_preflight_checks(
            org=org,
            role_arn=connection.role_arn,
            external_id=connection.external_id,
            location_code=connection.location,
            alias=req.key_alias or REPLACEMENT_KEY_ALIAS,
            key_ids=req.requested_key_arns or None,
            encryption_context=context,
        )
        if report.passed:
            report.checks.extend(_replacement_checks(connection, report.key_arns, context))
    except Exception:
        log.exception("Re-encryption preflight #%s could not complete", preflight_id)
        report = setup_checks.PreflightReport(
            checks=[
                setup_checks.Check(
                    "preflight",
                    "",
                    False,
                    "The preflight could not complete because of an error on our side.",
                    "Run the preflight again; if it fails again, contact support.",
                    setup_checks.CAUSE_INTERNAL,
                )
            ]
        )
    return _finish_preflight(preflight_id, report)


def _replacement_checks(
    connection: ByokConnection, key_arns: dict[str, str], context: dict
) -> list[setup_checks.Check]:
    """Beyond the setup checks: each new key is in the connected account, is not a key in use,
    and a data key re-wraps from the current key to it (``kms:ReEncryptFrom``/``To``)."""
    Check = setup_checks.Check
    checks: list[Check] = []
    current = {
        k.region: k.key_arn
        for k in RegionalKey.objects.filter(connection=connection, is_current=True)
    }
    in_use = set(
        RegionalKey.objects.filter(connection=connection, retired_at=None).values_list(
            "key_arn", flat=True
        )
    )
    record = recorder_for(connection.organization)
    re_encrypt_params: dict = {}

    def on_call(call: aws.KmsCall) -> None:
        # connections.aws reports ReEncrypt without its contexts and source key: add them.
        if call.operation == "ReEncrypt" and re_encrypt_params:
            call = replace(
                call, encryption_context=context, request_parameters=dict(re_encrypt_params)
            )
        record(call)

    session = aws.assume_customer_role(
        role_arn=connection.role_arn,
        external_id=connection.external_id,
        cached=False,
        on_call=on_call,
    )
    for region, arn in key_arns.items():
        account = arn.split(":")[4] if arn.count(":") >= 5 else ""
        if account != connection.aws_account_id:
            checks.append(
                Check(
                    "key-account",
                    region,
                    False,
                    f"The key {arn} is in AWS account {account}, not in "
                    f"{connection.aws_account_id}.",
                    f"Create the new key in account {connection.aws_account_id}.",
                    "wrong-account",
                )
            )
            continue
        checks.append(Check("key-account", region, True, f"In account {account}.", ""))
        if arn in in_use:
            checks.append(
                Check(
                    "key-new",
                    region,
                    False,
                    f"The key {arn} is already one of your keys in use in {region}.",
                    "Deploy the replacement-keys template (it creates a new key under the alias "
                    f"{REPLACEMENT_KEY_ALIAS}) or give the ARN of a new key.",
                    "key-in-use",
                )
            )
            continue
        checks.append(Check("key-new", region, True, "A new key, not one in use.", ""))
        source = current.get(region)
        if not source:
            continue
        plaintext = recovered = None
        try:
            plaintext, blob, _ = session.generate_data_key(region, source, context)
            re_encrypt_params.update(
                SourceKeyId=source,
                DestinationKeyId=arn,
                SourceEncryptionContext=context,
                DestinationEncryptionContext=context,
            )
            rewrapped = session.re_encrypt(
                region, blob=blob, source_key=source, dest_key=arn, context=context
            )
            recovered = session.decrypt(region, arn, rewrapped, context)
            ok = hmac.compare_digest(plaintext, recovered)
        except aws.AwsError as err:
            ok = False
            detail = f"ReEncrypt from {source} to {arn} failed ({err.code or err.cause})."
        else:
            detail = (
                f"A data key re-wrapped from the current key to {arn} and decrypted."
                if ok
                else "The re-wrapped data key came back different."
            )
        finally:
            del plaintext, recovered
        checks.append(
            Check(
                "re-encrypt",
                region,
                ok,
                detail,
                ""
                if ok
                else "Let the role use kms:ReEncryptFrom on the current key and kms:ReEncryptTo "
                "on the new key (the kit's key policy does), and keep both keys enabled.",
                "" if ok else "re-encrypt-failed",
            )
        )
    return checks


@transaction.atomic
def _finish_preflight(preflight_id: int, report: setup_checks.PreflightReport):
    data = report.to_dict()
    run, saved = review.finish_run(
        model=ReencryptionPreflight,
        run_id=preflight_id,
        checks=data["checks"],
        key_arns=data["key_arns"],
        passed=report.passed,
        related=["request__organization", "request__connection"],
    )
    if not saved:
        return run
    req = run.request
    ReencryptionEvent.objects.create(
        request=req, kind="preflight", message=f"#{run.pk}: {report.summary()}"
    )
    record_event(
        event_name="RunReencryptionPreflight",
        org=req.organization,
        user_identity=user_identity_for(system=PREFLIGHT_WORKER),
        request_parameters={"requestId": req.pk, "preflightId": run.pk},
        response_elements={
            "outcome": run.status,
            "transient": report.transient,
            "failedChecks": [
                {"name": c.name, "region": c.region, "cause": c.cause} for c in report.failures
            ],
            "keyArns": dict(report.key_arns),
        },
        resources=[{"type": "AWS::KMS::Key", "ARN": arn} for arn in report.key_arns.values()],
        recipient_account_id=req.connection.aws_account_id,
    )
    return run
