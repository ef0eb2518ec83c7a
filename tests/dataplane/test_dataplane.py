"""dataplane.records: app records under the customer's KMS keys (moto in-process)."""

import base64

import botocore.exceptions
import pytest
from django.apps import apps
from django.utils import timezone
from moto import mock_aws

from connections import aws
from connections.models import (
    ByokConnection,
    DataKey,
    DataKeyWrapping,
    RegionalKey,
    ScopedRevocation,
)
from core.locations import get_location
from dataplane import dek_cache, envelope
from dataplane import records as dataplane
from dataplane.envelope import DecryptionFailed
from dataplane.models import AppDataHealth, AppRecord
from dataplane.records import AppSuspended, KeysUnavailable, NotByokApp
from orgs.models import AppInstance
from tests.factories import AppInstanceFactory, OrganizationFactory, SiteFactory, UserFactory

pytestmark = pytest.mark.django_db

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"
PRIMARY, SECONDARY = "us-east-1", "us-west-2"
SECRET = b"PROJ-7 Acquisition of Globex: board vote on 3 June"


class FakeClock:
    def __init__(self, now: float = 5000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def moto(settings):
    """moto in-process, fresh sessions, clients, caches and hooks for every test."""
    settings.AWS_ENDPOINT_URL = None
    settings.AWS_MAX_ATTEMPTS = 1  # an injected timeout fails at once, no backoff sleeps
    hooks = list(aws.EVENT_HOOKS)
    _customer_clients.clear()
    with mock_aws():
        aws.forget_sessions()
        dek_cache.purge_all()
        dataplane.forget_health_throttle()
        yield
    aws.EVENT_HOOKS[:] = hooks
    aws.forget_sessions()
    dek_cache.purge_all()
    dataplane.forget_health_throttle()


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(dek_cache.GUARD, "clock", fake)
    monkeypatch.setattr(dek_cache.CACHE, "clock", fake)
    return fake


_customer_clients: dict[tuple[str, str], object] = {}


def customer_kms(region: str, account: str = ACCOUNT):
    """The customer's own KMS client (one per test, region and account: clients are slow to
    create)."""
    client = _customer_clients.get((region, account))
    if client is None:
        client = _customer_clients[(region, account)] = aws.customer_admin_client(
            "kms", region, account
        )
    return client


def byok_app(*, location="us", account=ACCOUNT, app=AppInstance.App.JIRA) -> AppInstance:
    """An org with an active BYOK connection, real moto keys, and one BYOK app instance."""
    org = OrganizationFactory()
    site = SiteFactory(organization=org)
    connection = ByokConnection.objects.create(
        organization=org, aws_account_id=account, location=location, state="active"
    )
    for region in get_location(location).regions:
        arn = customer_kms(region, account).create_key(
            KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT"
        )["KeyMetadata"]["Arn"]
        RegionalKey.objects.create(
            connection=connection, region=region, key_arn=arn, status="enabled"
        )
    return AppInstanceFactory(
        site=site, app=app, encryption=AppInstance.Encryption.BYOK, status="active"
    )


@pytest.fixture
def app() -> AppInstance:
    return byok_app()


def connection_of(app_instance) -> ByokConnection:
    return ByokConnection.objects.get(organization=app_instance.site.organization)


def key_arn(app_instance, region) -> str:
    return RegionalKey.objects.get(connection=connection_of(app_instance), region=region).key_arn


def cold_process() -> None:
    """What a freshly started worker process has: no cached keys, sessions or guard memo."""
    dek_cache.purge_all()
    aws.forget_sessions()
    dataplane.forget_health_throttle()


class KmsCalls:
    """Counts KMS requests sent, by (operation, region), at the botocore layer."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def __call__(self, request, **kwargs):
        operation = request.headers.get("X-Amz-Target", b"")
        operation = operation.decode() if isinstance(operation, bytes) else operation
        region = request.url.split("//kms.")[-1].split(".")[0]
        self.calls.append((operation.rsplit(".", 1)[-1], region))

    def count(self, operation=None, region=None) -> int:
        return sum(
            1
            for op, reg in self.calls
            if (operation is None or op == operation) and (region is None or reg == region)
        )


@pytest.fixture
def kms_calls() -> KmsCalls:
    counter = KmsCalls()
    aws.EVENT_HOOKS.append(("before-send.kms", counter))
    aws.forget_sessions()  # hooks bind when a client is created
    return counter


def fail_region(operation: str, region: str, error: Exception):
    """A botocore before-send hook raising ``error`` for ``operation`` (all if empty) in one
    region. Registered after the ``kms_calls`` counter, so the attempt is still counted."""

    def handler(request, **kwargs):
        target = request.headers.get("X-Amz-Target", b"")
        target = target.decode() if isinstance(target, bytes) else target
        if f"kms.{region}." in request.url and target.endswith(f".{operation}"):
            raise error

    aws.EVENT_HOOKS.append(("before-send.kms", handler))
    aws.forget_sessions()


def timeout_in(region: str):
    return botocore.exceptions.ConnectTimeoutError(
        endpoint_url=f"https://kms.{region}.amazonaws.com/"
    )


def aws_refusal(code: str, operation: str):
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} (injected)"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        operation,
    )


# --- Round trips ------------------------------------------------------------------------------


def test_stored_record_reads_back_its_plaintext(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)

    assert dataplane.read_record(app_instance=app, record_id=record.pk) == SECRET
    assert dataplane.decrypt_record(record=AppRecord.objects.get(pk=record.pk)) == SECRET


def test_record_is_stored_only_as_ciphertext_in_the_versioned_format(app):
    record = dataplane.store_record(app_instance=app, kind="page", plaintext=SECRET)

    stored = bytes(AppRecord.objects.get(pk=record.pk).ciphertext)
    assert SECRET not in stored
    assert envelope.parse_header(stored) == (1, record.data_key_id)


def test_updated_record_reads_its_new_content_and_counts_a_version(app):
    record = dataplane.store_record(app_instance=app, kind="comment", plaintext=b"first")

    record = dataplane.update_record(record=record, plaintext=b"second")

    assert record.version == 2
    assert dataplane.read_record(app_instance=app, record_id=record.pk) == b"second"


def test_records_round_trip_in_a_single_region_location():
    app = byok_app(location="jp")

    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    cold_process()

    assert dataplane.read_record(app_instance=app, record_id=record.pk) == SECRET
    assert list(DataKeyWrapping.objects.values_list("region", flat=True)) == ["ap-northeast-1"]


def test_unknown_record_kind_is_refused(app):
    with pytest.raises(ValueError, match="kind"):
        dataplane.store_record(app_instance=app, kind="spreadsheet", plaintext=SECRET)


def test_vendor_managed_app_does_not_use_the_byok_data_plane():
    app = AppInstanceFactory(encryption=AppInstance.Encryption.VENDOR_MANAGED)

    with pytest.raises(NotByokApp):
        dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)


# --- Data keys ----------------------------------------------------------------------------------


def test_first_write_creates_one_dek_wrapped_in_both_regions_with_its_context(app, kms_calls):
    for _ in range(3):
        dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)

    data_key = DataKey.objects.get(app_instance=app)
    assert data_key.is_current
    assert data_key.encryption_context == {
        "org": str(app.site.organization_id),
        "site": app.site.name,
        "app": "jira",
    }
    wrappings = {w.region: w for w in data_key.wrappings.select_related("regional_key")}
    assert set(wrappings) == {PRIMARY, SECONDARY}
    for region, wrapping in wrappings.items():
        assert wrapping.regional_key.key_arn == key_arn(app, region)
    assert kms_calls.count("GenerateDataKey", PRIMARY) == 1
    assert kms_calls.count("Encrypt", SECONDARY) == 1
    assert kms_calls.count("GenerateDataKey") + kms_calls.count("Encrypt") == 2


def test_provisioning_creates_the_current_dek_once(app, kms_calls):
    AppInstance.objects.filter(pk=app.pk).update(status="provisioning")

    first = dataplane.ensure_current_data_key(app)
    again = dataplane.ensure_current_data_key(app)
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)

    assert first == again == DataKey.objects.get(app_instance=app, is_current=True)
    assert record.data_key_id == first.pk
    assert kms_calls.count("GenerateDataKey") == 1


@pytest.mark.parametrize("region", [PRIMARY, SECONDARY])
def test_either_regions_wrapping_unwraps_the_same_dek(app, region):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    wrapping = DataKeyWrapping.objects.get(data_key_id=record.data_key_id, region=region)
    data_key = wrapping.data_key

    dek = customer_kms(region).decrypt(
        CiphertextBlob=bytes(wrapping.blob),
        KeyId=key_arn(app, region),
        EncryptionContext=data_key.encryption_context,
    )["Plaintext"]

    parts = (app.site.organization_id, app.pk, record.pk)
    assert envelope.open_(dek=dek, blob=bytes(record.ciphertext), aad_parts=parts) == SECRET


def test_no_plaintext_dek_is_stored_anywhere_in_the_database(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    dataplane.read_record(app_instance=app, record_id=record.pk)
    wrapping = DataKeyWrapping.objects.get(data_key_id=record.data_key_id, region=PRIMARY)
    dek = customer_kms(PRIMARY).decrypt(
        CiphertextBlob=bytes(wrapping.blob),
        EncryptionContext=wrapping.data_key.encryption_context,
    )["Plaintext"]
    needles = [dek, dek.hex().encode(), base64.b64encode(dek), SECRET]

    scanned = 0
    for model in apps.get_models():
        for row in model.objects.all().values():
            for value in row.values():
                if isinstance(value, bytes | memoryview | bytearray):
                    haystack = bytes(value)
                else:
                    haystack = str(value).encode()
                scanned += 1
                for needle in needles:
                    assert needle not in haystack, f"{model.__name__} holds key or plaintext"
    assert scanned > 50


def test_writes_reuse_the_cached_dek_so_kms_is_called_rarely(app, kms_calls):
    for i in range(2000):
        dataplane.encrypt_for(app_instance_id=app.pk, record_id=i, plaintext=SECRET)

    # DescribeKey + GenerateDataKey in the primary, DescribeKey + Encrypt in the secondary.
    assert len(kms_calls.calls) == 4


def test_cache_miss_unwraps_in_the_primary_region_after_checking_the_key(app, kms_calls):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    cold_process()
    kms_calls.calls.clear()

    assert dataplane.read_record(app_instance=app, record_id=record.pk) == SECRET

    assert kms_calls.calls == [("DescribeKey", PRIMARY), ("Decrypt", PRIMARY)]


def test_dek_is_unwrapped_again_after_the_cache_max_age(app, clock, kms_calls):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    cold_process()
    dataplane.read_record(app_instance=app, record_id=record.pk)
    clock.advance(299)
    dataplane.read_record(app_instance=app, record_id=record.pk)
    assert kms_calls.count("Decrypt") == 1

    clock.advance(1)
    dataplane.read_record(app_instance=app, record_id=record.pk)

    assert kms_calls.count("Decrypt") == 2


def test_dek_is_unwrapped_again_after_max_uses(app, settings, kms_calls):
    settings.DEK_CACHE_MAX_USES = 5
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    cold_process()

    for _ in range(6):
        dataplane.read_record(app_instance=app, record_id=record.pk)

    assert kms_calls.count("Decrypt") == 2


def test_cache_holds_at_most_max_entries_deks(settings):
    settings.DEK_CACHE_MAX_ENTRIES = 2
    instances = [byok_app(app=code) for code in ("jira", "confluence", "jsm")]

    for instance in instances:
        dataplane.store_record(app_instance=instance, kind="issue", plaintext=SECRET)

    assert len(dek_cache.CACHE) == 2


def test_old_dek_is_rotated_and_its_records_stay_readable(app, settings):
    settings.DEK_ROTATE_AFTER_S = 3600
    old = dataplane.store_record(app_instance=app, kind="issue", plaintext=b"old")
    DataKey.objects.filter(pk=old.data_key_id).update(
        created_at=timezone.now() - timezone.timedelta(hours=2)
    )
    cold_process()

    new = dataplane.store_record(app_instance=app, kind="issue", plaintext=b"new")

    assert new.data_key_id != old.data_key_id
    assert DataKey.objects.get(pk=new.data_key_id).is_current
    assert not DataKey.objects.get(pk=old.data_key_id).is_current
    assert dataplane.read_record(app_instance=app, record_id=old.pk) == b"old"
    assert dataplane.update_record(record=old, plaintext=b"moved").data_key_id == new.data_key_id


# --- Integrity: tampering, swapping, other orgs, wrong context ----------------------------------


def test_tampered_ciphertext_fails_to_decrypt(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    blob = bytearray(record.ciphertext)
    blob[-5] ^= 0x40
    AppRecord.objects.filter(pk=record.pk).update(ciphertext=bytes(blob))

    with pytest.raises(DecryptionFailed):
        dataplane.read_record(app_instance=app, record_id=record.pk)
    assert "failed to decrypt" in AppDataHealth.objects.get(app_instance=app).last_failure


def test_ciphertext_swapped_to_another_record_fails(app):
    first = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    second = dataplane.store_record(app_instance=app, kind="issue", plaintext=b"public")
    AppRecord.objects.filter(pk=second.pk).update(ciphertext=first.ciphertext)

    with pytest.raises(DecryptionFailed):
        dataplane.read_record(app_instance=app, record_id=second.pk)


def test_another_orgs_record_cannot_be_read_through_this_app(app):
    theirs = byok_app(account=OTHER_ACCOUNT)
    their_record = dataplane.store_record(app_instance=theirs, kind="issue", plaintext=SECRET)

    with pytest.raises(AppRecord.DoesNotExist):
        dataplane.read_record(app_instance=app, record_id=their_record.pk)


def test_another_orgs_ciphertext_copied_into_this_app_fails(app):
    theirs = byok_app(account=OTHER_ACCOUNT)
    their_record = dataplane.store_record(app_instance=theirs, kind="issue", plaintext=SECRET)
    mine = dataplane.store_record(app_instance=app, kind="issue", plaintext=b"mine")

    # Ciphertext copied alone (the record still names its own data key) …
    AppRecord.objects.filter(pk=mine.pk).update(ciphertext=their_record.ciphertext)
    with pytest.raises(DecryptionFailed):
        dataplane.read_record(app_instance=app, record_id=mine.pk)
    # … or together with the reference to their data key.
    AppRecord.objects.filter(pk=mine.pk).update(data_key_id=their_record.data_key_id)
    with pytest.raises(DecryptionFailed):
        dataplane.read_record(app_instance=app, record_id=mine.pk)
    cold_process()
    with pytest.raises(DecryptionFailed):
        dataplane.read_record(app_instance=app, record_id=mine.pk)


def test_wrapped_dek_does_not_unwrap_under_another_encryption_context(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    wrapping = DataKeyWrapping.objects.get(data_key_id=record.data_key_id, region=PRIMARY)
    session = aws.assume_customer_role(
        role_arn=connection_of(app).role_arn, external_id=connection_of(app).external_id
    )
    wrong = dict(wrapping.data_key.encryption_context, app="confluence")

    with pytest.raises(aws.InvalidCiphertext):
        session.decrypt(PRIMARY, key_arn(app, PRIMARY), bytes(wrapping.blob), wrong)


def test_record_under_a_dek_with_a_changed_context_fails_and_does_not_revoke(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    data_key = DataKey.objects.get(pk=record.data_key_id)
    data_key.encryption_context = dict(data_key.encryption_context, org="999")
    data_key.save()
    cold_process()

    with pytest.raises(DecryptionFailed, match="encryption context"):
        dataplane.read_record(app_instance=app, record_id=record.pk)
    assert connection_of(app).state == "active"


def test_another_apps_ciphertext_in_the_same_org_fails_although_its_key_is_warm(app):
    sibling = AppInstanceFactory(
        site=app.site, app="confluence", encryption=AppInstance.Encryption.BYOK, status="active"
    )
    _dek, theirs = dataplane.encrypt_for(app_instance_id=sibling.pk, record_id=7, plaintext=SECRET)

    with pytest.raises(DecryptionFailed, match="another app"):
        dataplane.decrypt_for(app_instance_id=app.pk, record_id=7, blob=theirs)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_ciphertext_reads_back_from_any_bytes_like_value(app, kind):
    _dek, blob = dataplane.encrypt_for(app_instance_id=app.pk, record_id=3, plaintext=SECRET)

    for _ in range(2):  # the slow path first, then the leased key
        assert dataplane.decrypt_for(app_instance_id=app.pk, record_id=3, blob=kind(blob)) == SECRET


def test_a_purge_racing_the_slow_path_leaves_the_key_unleased(app, monkeypatch):
    _dek, blob = dataplane.encrypt_for(app_instance_id=app.pk, record_id=3, plaintext=SECRET)
    dek_cache.GUARD.forget_all()
    ask_database = dek_cache.GUARD._lookup

    def lookup_while_another_thread_purges(app_instance_id):
        answer = ask_database(app_instance_id)
        dek_cache.CACHE.end_leases(org_id=answer.org_id)
        return answer

    monkeypatch.setattr(dek_cache.GUARD, "_lookup", lookup_while_another_thread_purges)
    assert dataplane.decrypt_for(app_instance_id=app.pk, record_id=3, blob=blob) == SECRET

    entry = dek_cache.entry_for_header(blob[: envelope.HEADER_BYTES])
    assert entry.lease_until < dek_cache.GUARD.clock()


def test_writes_are_refused_within_guard_ttl_after_another_process_revokes(app, clock):
    dataplane.encrypt_for(app_instance_id=app.pk, record_id=1, plaintext=SECRET)
    ByokConnection.objects.filter(pk=connection_of(app).pk).update(state="revoked")

    clock.advance(dek_cache.GUARD.ttl_s * 0.9)
    dataplane.encrypt_for(app_instance_id=app.pk, record_id=2, plaintext=SECRET)
    clock.advance(dek_cache.GUARD.ttl_s * 0.1)
    with pytest.raises(AppSuspended):
        dataplane.encrypt_for(app_instance_id=app.pk, record_id=3, plaintext=SECRET)


# --- Refusal: revoked, suspended, pending -------------------------------------------------------


def test_reads_are_refused_within_guard_ttl_after_another_process_revokes(app, clock):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    dataplane.read_record(app_instance=app, record_id=record.pk)
    org_id = app.site.organization_id
    # Another process commits the revocation: nothing tells this one.
    ByokConnection.objects.filter(organization_id=org_id).update(
        state="revoked", state_reason="Revoked by admin@acme.example: test"
    )

    clock.advance(dek_cache.GUARD.ttl_s)

    with pytest.raises(AppSuspended) as refused:
        dataplane.read_record(app_instance=app, record_id=record.pk)
    assert refused.value.cause == "revoked"
    assert "revoked" in refused.value.reason and "Revoked by admin" in refused.value.reason
    assert not any(e.org_id == org_id for e in dek_cache.CACHE._entries.values())


def test_guard_ttl_is_the_only_window_for_a_revocation_in_another_process(app, clock):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    dataplane.read_record(app_instance=app, record_id=record.pk)
    ByokConnection.objects.filter(pk=connection_of(app).pk).update(state="revoked")

    clock.advance(dek_cache.GUARD.ttl_s * 0.9)
    assert dataplane.read_record(app_instance=app, record_id=record.pk) == SECRET
    clock.advance(dek_cache.GUARD.ttl_s * 0.1)
    with pytest.raises(AppSuspended):
        dataplane.read_record(app_instance=app, record_id=record.pk)


def test_writes_are_refused_after_revocation(app, clock):
    dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    ByokConnection.objects.filter(pk=connection_of(app).pk).update(state="revoked")
    clock.advance(1)

    with pytest.raises(AppSuspended):
        dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    assert AppRecord.objects.filter(app_instance=app).count() == 1


def test_revoke_service_refuses_reads_in_this_process_at_once(app, clock):
    from connections.services import revoke_key_access

    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    dataplane.read_record(app_instance=app, record_id=record.pk)

    revoke_key_access(org=app.site.organization, actor=UserFactory(), reason="test")

    with pytest.raises(AppSuspended):  # no clock advance needed: the guard memo was purged
        dataplane.read_record(app_instance=app, record_id=record.pk)


@pytest.mark.parametrize("state", ["pending", "revoked", "restoring", "expired"])
def test_unusable_connection_states_refuse_with_a_reason(app, state):
    ByokConnection.objects.filter(pk=connection_of(app).pk).update(state=state)

    with pytest.raises(AppSuspended) as refused:
        dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    assert refused.value.cause == state
    assert refused.value.reason


@pytest.mark.parametrize("state", ["degraded", "re-encrypting"])
def test_degraded_and_reencrypting_connections_keep_apps_online(app, state):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    ByokConnection.objects.filter(pk=connection_of(app).pk).update(state=state)
    cold_process()

    assert dataplane.read_record(app_instance=app, record_id=record.pk) == SECRET


def test_suspended_app_is_refused_even_with_usable_keys(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    AppInstance.objects.filter(pk=app.pk).update(status="suspended", status_reason="Billing hold")
    dek_cache.GUARD.forget_all()

    with pytest.raises(AppSuspended) as refused:
        dataplane.read_record(app_instance=app, record_id=record.pk)
    assert refused.value.cause == "app-suspended"
    assert "Billing hold" in refused.value.reason


# --- AWS failures: fallback, refusal → revocation -----------------------------------------------


def test_read_falls_back_to_the_second_region_when_the_primary_is_unreachable(app, kms_calls):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    cold_process()
    fail_region("Decrypt", PRIMARY, timeout_in(PRIMARY))
    kms_calls.calls.clear()

    assert dataplane.read_record(app_instance=app, record_id=record.pk) == SECRET

    assert kms_calls.count("Decrypt", PRIMARY) == 1
    assert kms_calls.count("Decrypt", SECONDARY) == 1
    assert connection_of(app).state == "active"


def test_read_falls_back_when_every_primary_call_is_throttled(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    cold_process()
    fail_region("", PRIMARY, aws_refusal("ThrottlingException", "DescribeKey"))

    assert dataplane.read_record(app_instance=app, record_id=record.pk) == SECRET
    assert connection_of(app).state == "active"


def test_both_regions_unreachable_is_transient_not_a_revocation(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    cold_process()
    fail_region("Decrypt", PRIMARY, timeout_in(PRIMARY))
    fail_region("Decrypt", SECONDARY, timeout_in(SECONDARY))

    with pytest.raises(KeysUnavailable) as unavailable:
        dataplane.read_record(app_instance=app, record_id=record.pk)

    assert unavailable.value.transient
    assert isinstance(unavailable.value, AppSuspended)
    assert connection_of(app).state == "active"
    assert AppInstance.objects.get(pk=app.pk).status == "active"


def test_disabled_exception_from_kms_revokes_at_once(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    cold_process()
    fail_region("Decrypt", PRIMARY, aws_refusal("DisabledException", "Decrypt"))

    with pytest.raises(AppSuspended) as refused:
        dataplane.read_record(app_instance=app, record_id=record.pk)

    assert refused.value.cause == "key-disabled"
    connection = connection_of(app)
    assert connection.state == "revoked"
    assert PRIMARY in connection.state_reason
    assert AppInstance.objects.get(pk=app.pk).status == "suspended"
    assert RegionalKey.objects.get(connection=connection, region=PRIMARY).status == "disabled"
    assert len(dek_cache.CACHE) == 0


@pytest.mark.parametrize("code", ["NotFoundException", "KMSInvalidStateException"])
def test_other_refusals_on_first_write_revoke_too(app, code):
    fail_region("GenerateDataKey", PRIMARY, aws_refusal(code, "GenerateDataKey"))

    with pytest.raises(AppSuspended):
        dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)

    assert connection_of(app).state == "revoked"
    assert not DataKey.objects.filter(app_instance=app).exists()


def test_access_denied_to_the_apps_context_revokes_only_that_app(app):
    """DescribeKey works, GenerateDataKey with the app's context is denied: a customer-side
    Deny on this app's encryption context, not on the key — only the app's scope goes."""
    fail_region("GenerateDataKey", PRIMARY, aws_refusal("AccessDeniedException", "GenerateDataKey"))

    with pytest.raises(AppSuspended) as refused:
        dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)

    assert refused.value.cause == "scope-revoked"
    assert connection_of(app).state == "active"
    revocation = ScopedRevocation.objects.get()
    assert (revocation.kind, revocation.app_instance_id, revocation.source) == (
        "app",
        app.pk,
        "customer-aws",
    )


def test_access_denied_to_describe_the_key_still_revokes_the_whole_org(app):
    fail_region("DescribeKey", PRIMARY, aws_refusal("AccessDeniedException", "DescribeKey"))

    with pytest.raises(AppSuspended):
        dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)

    assert connection_of(app).state == "revoked"


def test_key_disabled_in_kms_is_detected_on_a_cache_miss_although_moto_still_decrypts(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    cold_process()
    key_id = key_arn(app, PRIMARY).rsplit("/", 1)[-1]
    customer_kms(PRIMARY).disable_key(KeyId=key_id)

    with pytest.raises(AppSuspended):
        dataplane.read_record(app_instance=app, record_id=record.pk)

    assert connection_of(app).state == "revoked"


def test_kms_calls_of_the_data_plane_are_audited_as_key_usage(app):
    from audit.models import AuditEvent

    dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)

    names = set(
        AuditEvent.objects.filter(organization=app.site.organization).values_list(
            "event_name", flat=True
        )
    )
    assert {"AssumeRole", "GenerateDataKey", "Encrypt", "DescribeKey"} <= names


# --- Health and the live read check -------------------------------------------------------------


def test_successful_read_records_last_read_at(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)

    dataplane.read_record(app_instance=app, record_id=record.pk)

    assert AppDataHealth.objects.get(app_instance=app).last_read_at is not None


def test_warm_read_costs_one_query_and_health_writes_are_throttled(
    app, clock, django_assert_num_queries
):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    dataplane.read_record(app_instance=app, record_id=record.pk)  # writes health once
    first = AppDataHealth.objects.get(app_instance=app).last_read_at

    with django_assert_num_queries(1):
        for _ in range(3):
            dataplane.decrypt_for(
                app_instance_id=app.pk, record_id=record.pk, blob=bytes(record.ciphertext)
            )
        dataplane.read_record(app_instance=app, record_id=record.pk)

    assert AppDataHealth.objects.get(app_instance=app).last_read_at == first


def test_refused_read_records_the_failure(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    ByokConnection.objects.filter(pk=connection_of(app).pk).update(state="revoked")
    dek_cache.GUARD.forget_all()

    with pytest.raises(AppSuspended):
        dataplane.read_record(app_instance=app, record_id=record.pk)

    health = AppDataHealth.objects.get(app_instance=app)
    assert health.last_failure_at is not None
    assert "revoked" in health.last_failure


def test_live_read_check_reads_the_newest_record(app):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)

    ok, detail = dataplane.live_read_check(app, verify_kms=True)

    assert ok
    assert f"issue #{record.pk}" in detail


def test_live_read_check_round_trips_a_dek_when_there_are_no_records(app):
    ok, detail = dataplane.live_read_check(app)

    assert ok
    assert "No records yet" in detail
    assert not AppRecord.objects.exists()


def test_live_read_check_reports_revocation_without_waiting_for_the_guard(app, clock):
    dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    ByokConnection.objects.filter(pk=connection_of(app).pk).update(state="revoked")

    ok, detail = dataplane.live_read_check(app)

    assert not ok
    assert "revoked" in detail


def test_live_read_check_with_verify_kms_unwraps_the_dek_again(app, kms_calls):
    dataplane.live_read_check(app)  # creates the data key
    kms_calls.calls.clear()

    ok, _detail = dataplane.live_read_check(app, verify_kms=True)

    assert ok
    assert kms_calls.calls == [("DescribeKey", PRIMARY), ("Decrypt", PRIMARY)]


def test_purging_the_org_in_this_process_forces_a_kms_unwrap(app, kms_calls):
    record = dataplane.store_record(app_instance=app, kind="issue", plaintext=SECRET)
    kms_calls.calls.clear()

    assert dek_cache.purge_org(app.site.organization_id) == 1
    dataplane.read_record(app_instance=app, record_id=record.pk)

    assert kms_calls.count("Decrypt") == 1
