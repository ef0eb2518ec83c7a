"""The services lane end to end: a task enqueued on Redis runs in a real worker on PostgreSQL."""

import uuid

import pytest


@pytest.mark.django_db(transaction=True)
def test_worker_runs_task_and_writes_to_postgres(celery_worker_process, wait_for, settings):
    from audit.models import AuditEvent
    from audit.tasks import record_heartbeat

    assert "postgresql" in settings.DATABASES["default"]["ENGINE"]
    assert settings.CELERY_BROKER_URL.startswith("redis://")

    note = f"smoke-{uuid.uuid4().hex}"
    record_heartbeat.delay(note)

    wait_for(
        lambda: AuditEvent.objects.filter(
            event_name="WorkerHeartbeat", record__requestParameters__note=note
        ).exists(),
        timeout=30,
        message=lambda: (
            f"the worker to record heartbeat {note}\n--- worker log ---\n"
            + celery_worker_process.log()[-3000:]
        ),
    )


@pytest.mark.django_db(transaction=True)
def test_a_task_runs_under_the_request_id_of_the_request_that_enqueued_it(
    celery_worker_process, wait_for
):
    """The request's ID reaches the worker: its log lines and the audit event it writes."""
    from audit.models import AuditEvent
    from audit.tasks import record_heartbeat
    from core.request_id import request_id_set

    note = f"request-id-{uuid.uuid4().hex}"
    request_id = f"req-{uuid.uuid4().hex[:20]}"
    with request_id_set(request_id):
        record_heartbeat.delay(note)
    events = AuditEvent.objects.filter(
        event_name="WorkerHeartbeat", record__requestParameters__note=note
    )
    wait_for(events.exists, timeout=30, message=lambda: celery_worker_process.log()[-3000:])
    assert events.get().request_id == request_id
    wait_for(
        lambda: any(
            request_id in line and "succeeded" in line
            for line in celery_worker_process.log().splitlines()
        ),
        timeout=10,
        message=lambda: (
            f"a worker log line with {request_id}:\n{celery_worker_process.log()[-3000:]}"
        ),
    )
