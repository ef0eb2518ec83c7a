"""Read checks: can each BYOK app read its data right now? Run by a beat task and by the
org admin's "Check now" button, never by opening a page (a GET changes nothing)."""

from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from dataplane.models import AppDataHealth
from dataplane.records import live_read_check
from orgs.models import AppInstance

WORKER_IDENTITY = {"type": "AWSService", "invokedBy": "byok-portal-worker"}


def record_read_check(*, app_instance_id: int) -> bool:
    """A live read through the data plane in *this* process; the result is kept on the app's
    health row (the BYOK page shows it) and audited as ``AppReadCheck``."""
    instance = AppInstance.objects.select_related("site__organization").get(pk=app_instance_id)
    readable, detail = live_read_check(instance)
    now = timezone.now()
    with transaction.atomic():
        fields = {
            "last_check_at": now,
            "last_check_ok": readable,
            "last_check_detail": detail[:300],
        }
        if not AppDataHealth.objects.filter(app_instance_id=instance.pk).update(**fields):
            AppDataHealth.objects.create(app_instance_id=instance.pk, **fields)
        record_event(
            org=instance.site.organization,
            user_identity=WORKER_IDENTITY,
            event_name="AppReadCheck",
            read_only=True,
            request_parameters={"appInstanceId": instance.pk},
            response_elements={"readable": readable, "detail": detail[:300]},
        )
    return readable


def byok_app_ids(*, org_id: int | None = None) -> list[int]:
    apps = AppInstance.objects.filter(encryption=AppInstance.Encryption.BYOK).exclude(
        status=AppInstance.Status.PROVISIONING
    )
    if org_id is not None:
        apps = apps.filter(site__organization_id=org_id)
    return list(apps.order_by("pk").values_list("pk", flat=True))


def check_app_reads(*, org_id: int | None = None) -> dict[int, bool]:
    """Read-check every BYOK app (of one org, or all). One app's failure never stops the rest."""
    return {
        app_id: record_read_check(app_instance_id=app_id) for app_id in byok_app_ids(org_id=org_id)
    }
