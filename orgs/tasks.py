from celery import shared_task

from audit.services import record_event


@shared_task(acks_late=True)
def record_heartbeat(note: str) -> str:
    """Proves a worker can reach the database: records a ``WorkerHeartbeat`` vendor event."""
    if not isinstance(note, str) or len(note) > 200:
        raise ValueError("note must be a string of at most 200 characters")
    record_event(
        event_name="WorkerHeartbeat",
        user_identity={"type": "AWSService", "invokedBy": "byok-portal-worker"},
        request_parameters={"note": note},
        read_only=True,
    )
    return note
