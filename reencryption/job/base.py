"""The plumbing of one run: the customer's session, the KMS threads, the record of every AWS
call, the checks made before each step and the checkpoint commit of a batch."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from connections import aws
from connections.models import ByokConnection, DataKey, DataKeyWrapping, RegionalKey
from connections.services import revoke_after_aws_refusal
from core.locations import get_location
from dataplane.envelope import DataKeyCipher
from dataplane.models import AppRecord
from orgs.models import AppInstance
from reencryption.job.audit import record_calls
from reencryption.job.common import (
    J,
    P,
    S,
    Stop,
    fail_locked,
    job_audit,
    job_event,
    pause_locked,
    revoked_scopes_note,
)
from reencryption.models import ReencryptionJob, ReencryptionMode

#: Rotate mode: the first batch of a run, before the records' size is known.
FIRST_RECORD_BATCH = 200


class RunnerBase:
    """One run of a job by the lease holder ``token``: what every phase uses."""

    def __init__(self, job_id: int, token: str):
        self.job_id = job_id
        self.token = token
        job = ReencryptionJob.objects.select_related("connection__organization").get(pk=job_id)
        self.connection_id = job.connection_id
        connection = job.connection
        self.org = connection.organization
        self.org_id = connection.organization_id
        self.role_arn = connection.role_arn
        self.external_id = connection.external_id
        self.regions = get_location(connection.location).regions
        self.app_ids = list(
            AppInstance.objects.filter(site__organization_id=self.org_id).values_list(
                "pk", flat=True
            )
        )
        self.calls: list[aws.KmsCall] = []
        self._session: aws.CustomerSession | None = None
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._keys_checked_at = float("-inf")
        self._fresh: dict[int, bool] = {}
        # Rotate mode: records read so far and their ciphertext bytes (the batch's byte bound).
        self._records_read = self._record_bytes_read = 0
        self._ciphers: dict[int, DataKeyCipher] = {}
        # Rotate mode: old DEKs unwrapped by the job, data key id → (expires at, cipher).
        self._old_ciphers: OrderedDict[int, tuple[float, DataKeyCipher]] = OrderedDict()
        self._pending: dict[int, list[Future]] = {}
        self._retire_attempts = 0
        self._last_commit = time.monotonic()

    # -- plumbing --

    def close(self) -> None:
        self._abandon_unwraps()
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # calls still in flight report before the last write
        self._ciphers.clear()
        self._old_ciphers.clear()
        self.record_calls()

    def _abandon_unwraps(self) -> None:
        for futures in self._pending.values():
            for future in futures:
                future.cancel()
        self._pending.clear()

    def _job(self) -> ReencryptionJob:
        return ReencryptionJob.objects.select_related("connection").get(pk=self.job_id)

    def _lock_job(self) -> ReencryptionJob | None:
        """The job row, locked, if this run still holds the lease.

        Lock order everywhere: connection, then job, then the audit chain head.
        """
        job = (
            ReencryptionJob.objects.select_for_update(of=("self",), no_key=True)
            .select_related("connection")
            .get(pk=self.job_id)
        )
        return job if job.lease_token == self.token else None

    def _lock_connection(self) -> ByokConnection:
        return (
            ByokConnection.objects.select_for_update(of=("self",), no_key=True)
            .select_related("organization")
            .get(pk=self.connection_id)
        )

    def _on_call(self, call: aws.KmsCall) -> None:
        extra = getattr(self._local, "extra", None)
        if extra is not None and call.operation == extra[0]:
            call = replace(call, encryption_context=extra[1], request_parameters=extra[2])
        self.calls.append(call)  # list.append is atomic: the KMS threads report here

    def session(self) -> aws.CustomerSession:
        if self._session is None or self._session.expires_at <= time.monotonic() + 60:
            self._session = aws.assume_customer_role(
                role_arn=self.role_arn,
                external_id=self.external_id,
                on_call=self._on_call,
                cached=False,
            )
        return self._session

    def record_calls(self) -> None:
        """Write the AWS calls made so far as key-usage events, committed now.

        Called as soon as a batch's calls have returned, before its checkpoint transaction
        (and on every way out of a step): a call is never held in memory past a commit of the
        job, so a worker killed at any later point loses no record of a call it made.
        """
        calls, self.calls = self.calls, []
        record_calls(self.org, self.job_id, calls)

    def _executor(self) -> ThreadPoolExecutor | None:
        """The run's KMS threads (None: calls are made one by one, in this thread)."""
        concurrency = int(settings.REENCRYPTION_KMS_CONCURRENCY)
        if concurrency <= 1:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reencrypt")
        return self._pool

    def _parallel(self, fn, items: list) -> list:
        pool = self._executor() if len(items) > 1 else None
        if pool is None:
            return [fn(item) for item in items]
        return list(pool.map(fn, items))

    def _org_deks(self):
        return DataKey.objects.filter(app_instance_id__in=self.app_ids, destroyed_at=None)

    def _org_records(self):
        return AppRecord.objects.filter(app_instance_id__in=self.app_ids)

    def _record_batch_limit(self, job: ReencryptionJob) -> int:
        """How many records the next rotate (or rotate-verify) batch reads: at most the job's
        batch size, and about ``REENCRYPTION_ROTATE_BATCH_BYTES`` of ciphertext at the average
        size of the records this run has read so far (``FIRST_RECORD_BATCH`` before any), so
        an org of large attachments gets small batches and one of small issues large ones."""
        if not self._records_read:
            return min(job.batch_size, FIRST_RECORD_BATCH)
        average = max(self._record_bytes_read / self._records_read, 1.0)
        by_bytes = int(settings.REENCRYPTION_ROTATE_BATCH_BYTES / average)
        return max(1, min(job.batch_size, by_bytes))

    def _note_record_sizes(self, rows, *, blob_at: int) -> None:
        self._records_read += len(rows)
        self._record_bytes_read += sum(len(row[blob_at]) for row in rows)

    def _records_after(self, after: int, *, upto: int | None, limit: int, fields) -> list[tuple]:
        """The org's first ``limit`` records with ``after < id ≤ upto``, in id order, as
        ``values_list(*fields)`` rows.

        In two steps, so that no query reads more than ``limit`` records of each app: their
        ids, app by app along the (app, id) index (merged by the database where it can), then
        the rows from the first to the ``limit``-th of those ids. (One query over the org's
        apps reads, and sorts, every record of the range before it takes the first ``limit``:
        a pass over the org's records per batch.)"""
        per_app = []
        for app_id in self.app_ids:
            query = AppRecord.objects.filter(app_instance_id=app_id, pk__gt=after)
            if upto is not None:
                query = query.filter(pk__lte=upto)
            per_app.append(query.order_by("pk").values_list("pk", flat=True)[:limit])
        if not per_app:
            return []
        if len(per_app) > 1 and connection.features.supports_slicing_ordering_in_compound:
            ids = list(per_app[0].union(*per_app[1:], all=True).order_by("pk")[:limit])
        else:
            ids = sorted(pk for query in per_app for pk in query)[:limit]
        if not ids:
            return []
        return list(
            self._org_records()
            .filter(pk__gte=ids[0], pk__lte=ids[-1])  # not from ``after``: other orgs' ids
            .order_by("pk")
            .values_list(*fields)[:limit]
        )

    def _new_keys(self, job: ReencryptionJob) -> dict[str, RegionalKey]:
        keys = RegionalKey.objects.in_bulk(list(job.new_keys.values()))
        return {region: keys[pk] for region, pk in job.new_keys.items()}

    # -- checks --

    def _note_error(self, message: str) -> None:
        ReencryptionJob.objects.filter(pk=self.job_id).update(
            last_error=message[:500], heartbeat_at=timezone.now()
        )

    def _refused(self, err: aws.AwsError) -> None:
        revoke_after_aws_refusal(
            connection_id=self.connection_id,
            region=err.region or self.regions[0],
            cause=err.cause,
            detail=f"{err.code or err.cause}: {err.message}"[:300],
            key_arn=getattr(err, "key_arn", ""),
        )

    def _check_connection(self, job: ReencryptionJob | None = None) -> None:
        """Stop (pausing or failing the job) unless the connection is re-encrypting.

        ``job``: the job as just read with its connection (:meth:`_job`), whose state is
        checked instead of reading it once more."""
        if job is not None and job.connection_id == self.connection_id:
            state = (job.connection.state, job.connection.state_reason)
        else:
            state = ByokConnection.objects.values_list("state", "state_reason").get(
                pk=self.connection_id
            )
        if state[0] == S.REENCRYPTING:
            note = revoked_scopes_note(self.connection_id)
            if not note:
                return
            with transaction.atomic():
                self._lock_connection()
                job = self._lock_job()
                if job is not None and job.state == J.RUNNING:
                    pause_locked(job, note)
            raise Stop
        with transaction.atomic():
            self._lock_connection()
            job = self._lock_job()
            if job is None or job.state != J.RUNNING:
                pass
            elif state[0] in (S.REVOKED, S.RESTORING):
                pause_locked(job, f"Paused: key access is {state[0]} ({state[1][:200]}).")
            else:
                fail_locked(
                    job,
                    f"The key connection became {state[0]} while the job ran; nothing was retired.",
                )
        raise Stop

    def _check_keys(self) -> None:
        """``DescribeKey`` every key in use at most every few seconds: moto (unlike AWS) lets
        a disabled key work, and a customer who disables a key means to revoke."""
        interval = float(settings.REENCRYPTION_KEY_CHECK_INTERVAL_S)
        now = time.monotonic()
        if now - self._keys_checked_at < interval:
            return
        keys = RegionalKey.objects.filter(connection_id=self.connection_id, retired_at=None)
        session = self.session()
        for key in keys:
            described = session.describe_key(key.region, key.key_arn)
            if described.state != "Enabled":
                err_cls = aws.KeyDisabled if described.state == "Disabled" else aws.KeyInvalidState
                err = err_cls(
                    f"The key {key.key_arn} is {described.state}.",
                    region=key.region,
                    code=f"KeyState:{described.state}",
                    operation="DescribeKey",
                )
                err.key_arn = key.key_arn
                raise err
        self._keys_checked_at = now

    # -- commit of one batch --

    def _commit(
        self,
        *,
        field: str,
        expected: int,
        new_last: int,
        units: int,
        counter: str,
        started: float,
        wrappings=(),
        updates=(),
    ) -> None:
        """Apply a batch and move the checkpoint, only if the checkpoint is still ``expected``
        (a duplicate run's batch is discarded, its results already being in).

        The key-usage events of the batch's calls are committed before this transaction
        starts (:meth:`record_calls`, here too for any call reported since)."""
        self.record_calls()
        with transaction.atomic():
            job = self._lock_job()
            if job is None or job.state != J.RUNNING or getattr(job, field) != expected:
                lost = True
            else:
                lost = False
                if wrappings:
                    DataKeyWrapping.objects.bulk_create(wrappings, ignore_conflicts=True)
                apply_updates(updates)
                now_mono = time.monotonic()
                elapsed = max(now_mono - min(started, self._last_commit), 1e-6)
                self._last_commit = now_mono
                batch_rate = units / elapsed
                job.rate = batch_rate if job.rate <= 0 else 0.7 * job.rate + 0.3 * batch_rate
                setattr(job, field, new_last)
                setattr(job, counter, getattr(job, counter) + units)
                job.batches += 1
                job.heartbeat_at = timezone.now()
                job.last_error = ""
                job.save(
                    update_fields=[
                        field,
                        counter,
                        "rate",
                        "batches",
                        "heartbeat_at",
                        "last_error",
                    ]
                )
        if lost:
            raise Stop

    def _enter_verify(self, job: ReencryptionJob, *, note: str) -> None:
        """End of the re-wrap (or rotate) phase: every record is to be verified next."""
        with transaction.atomic():
            locked = self._lock_job()
            if locked is None or locked.state != J.RUNNING:
                raise Stop
            if locked.phase not in (P.REWRAP, P.ROTATE):
                return
            locked.phase = P.VERIFY
            locked.verify_last_id = locked.verified = 0
            locked.verify_total = self._org_records().count()
            locked.rate = 0.0
            locked.save(
                update_fields=["phase", "verify_last_id", "verified", "verify_total", "rate"]
            )
            job_event(locked, "verifying", f"{note} Verifying that every record decrypts.")
            job_audit(
                locked,
                "RewrapDataKeys" if job.mode == ReencryptionMode.REWRAP else "RotateDataKeys",
                done=locked.done,
                total=locked.total,
                kmsCalls=locked.kms_calls,
            )
        self._last_commit = time.monotonic()


#: Records per UPDATE statement where the values travel as a VALUES list (not PostgreSQL):
#: 5 parameters each, well under SQLite's 32,766.
VALUES_CHUNK = 1000

# The table name is the model's own, quoted; every value is a bound parameter. The conditions
# are the per-record ones: written only if the app did not change the record meanwhile.
_UPDATE_FROM_ARRAYS = (  # PostgreSQL; %b: each array is sent in binary
    "UPDATE {table} AS r SET ciphertext = v.blob, data_key_id = v.new_dek "
    "FROM unnest(%b::bigint[], %b::integer[], %b::bigint[], %b::bigint[], %b::bytea[]) "
    "AS v(id, version, old_dek, new_dek, blob) "
    "WHERE r.id = v.id AND r.version = v.version AND r.data_key_id = v.old_dek"
)
_UPDATE_FROM_VALUES = (  # SQLite ≥ 3.33 (UPDATE … FROM); VALUES columns are column1 …
    "UPDATE {table} SET ciphertext = v.column5, data_key_id = v.column4 "
    "FROM (VALUES {rows}) AS v "
    "WHERE {table}.id = v.column1 AND {table}.version = v.column2 "
    "AND {table}.data_key_id = v.column3"
)


def apply_updates(updates) -> int:
    """Rotate mode: write a batch of re-encrypted records ``(pk, version, old dek, new dek,
    ciphertext)`` in one set-based UPDATE, each record only if its ``version`` and
    ``data_key`` are still those read (a concurrent app write wins: the record keeps the
    app's new content, under the app's current DEK). Returns how many records were written.

    On PostgreSQL the batch travels as five arrays in binary (one statement whatever its
    size; Django's cursor would send them as text literals, which costs more to build and to
    parse than the update itself), through a psycopg cursor on Django's connection, inside
    its transaction. Other databases get ``UPDATE … FROM (VALUES …)`` in chunks."""
    if not updates:
        return 0
    table = connection.ops.quote_name(AppRecord._meta.db_table)  # the model's, not input
    if connection.vendor == "postgresql":
        ids, versions, old_deks, new_deks, blobs = (
            list(column) for column in zip(*updates, strict=True)
        )
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(
                _UPDATE_FROM_ARRAYS.format(table=table), [ids, versions, old_deks, new_deks, blobs]
            )
            return cursor.rowcount
    written = 0
    with connection.cursor() as cursor:
        for start in range(0, len(updates), VALUES_CHUNK):
            chunk = updates[start : start + VALUES_CHUNK]
            rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                _UPDATE_FROM_VALUES.format(table=table, rows=rows),
                [value for update in chunk for value in update],
            )
            written += cursor.rowcount
    return written
