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
