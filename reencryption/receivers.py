"""Re-encryption follows the connection's kill switch (connected in ``AppConfig.ready()``)."""

from connections.signals import (
    key_access_expired,
    key_access_restored,
    key_access_revoked,
    scope_access_restored,
    scope_access_revoked,
)
from reencryption import job


def pause_jobs_on_revocation(sender, *, connection, reason: str = "", **kwargs) -> None:
    job.pause_jobs_for_revocation(connection, reason=reason)


def resume_jobs_on_restore(sender, *, connection, **kwargs) -> None:
    job.return_to_reencrypting_after_restore(connection)


def fail_jobs_on_expiry(sender, *, connection, **kwargs) -> None:
    job.fail_jobs_for_expiry(connection)


def pause_jobs_on_scope_revocation(sender, *, connection, revocation, **kwargs) -> None:
    job.pause_jobs_for_scope(connection)


def resume_jobs_on_scope_restore(sender, *, connection, revocation, **kwargs) -> None:
    job.resume_after_scope_restore(connection)


def connect() -> None:
    scope_access_revoked.connect(pause_jobs_on_scope_revocation, dispatch_uid="reencr-scope-pause")
    scope_access_restored.connect(resume_jobs_on_scope_restore, dispatch_uid="reencr-scope-resume")
    key_access_revoked.connect(pause_jobs_on_revocation, dispatch_uid="reencryption-pause")
    key_access_restored.connect(resume_jobs_on_restore, dispatch_uid="reencryption-resume")
    key_access_expired.connect(fail_jobs_on_expiry, dispatch_uid="reencryption-fail")
