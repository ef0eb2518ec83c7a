"""Bringing a newly provisioned BYOK app instance online."""

from django.db import transaction

from audit.services import record_event
from dataplane.records import ensure_current_data_key
from orgs.models import AppInstance


def activate_app_instance(*, app_instance_id: int) -> int:
    """Create the instance's first data key under the customer's key; then mark it active.

    Idempotent: an instance that is already active (or suspended by a revocation in the
    meantime) is left as it is. The KMS calls happen outside the database transaction.
    """
    instance = AppInstance.objects.select_related("site__organization").get(pk=app_instance_id)
    if instance.status != AppInstance.Status.PROVISIONING:
        return instance.pk
    data_key = ensure_current_data_key(instance)
    with transaction.atomic():
        locked = AppInstance.objects.select_for_update(no_key=True).get(pk=instance.pk)
        if locked.status != AppInstance.Status.PROVISIONING:
            return locked.pk
        locked.status = AppInstance.Status.ACTIVE
        locked.status_reason = ""
        locked.save(update_fields=["status", "status_reason", "updated_at"])
        record_event(
            org=instance.site.organization,
            user_identity={"type": "AWSService", "invokedBy": "byok-portal-provisioning"},
            event_name="ActivateByokApp",
            request_parameters={"appInstanceId": instance.pk, "app": instance.app},
            response_elements={"status": locked.status, "dataKeyId": data_key.pk},
        )
    return instance.pk
