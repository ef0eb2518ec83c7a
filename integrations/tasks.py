"""Celery entry points of CloudTrail ingestion (beat: every few minutes)."""

from celery import shared_task

from core.tasks import positive_id
from integrations import ingestion


@shared_task(acks_late=True)
def ingest_all_cloudtrail() -> list[int]:
    """Beat: queue an import of every enabled CloudTrail source."""
    return ingestion.ingest_all()


@shared_task(acks_late=True)
def ingest_cloudtrail_task(source_id: int) -> dict:
    """Import new log files of one source. Failures are recorded on the source; the next beat
    run retries them (files already imported are not read again)."""
    run = ingestion.ingest_source(source_id=positive_id(source_id))
    return {
        "imported": run.files_imported,
        "skipped": run.files_skipped,
        "malformed": run.files_malformed,
        "records": run.records_imported,
        "error": run.error,
    }
