"""The review workflow both request kinds share: claim, reject, notify, and lost preflight runs.

Every test runs against a setup request and a re-encryption request: the behaviour a rep and a
customer rely on is the same for both.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from core.errors import NotAllowed, NotFound
from orgs.staff_roles import ACCOUNT_REPS
from reencryption import services as reencryption
from setup import preflight as setup_preflight
from setup import services as setup
from tests.factories import (
    PreflightRunFactory,
    ReencryptionPreflightFactory,
    ReencryptionRequestFactory,
    SetupRequestFactory,
    staff_user,
)

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Kind:
    request_factory: Callable
    run_factory: Callable
    claim: Callable
    reject: Callable
    start_preflight: Callable
    claim_event: str
    reject_event: str
    rejected_subject: str


KINDS = {
    "setup": Kind(
        request_factory=SetupRequestFactory,
        run_factory=PreflightRunFactory,
        claim=setup.claim_setup_request,
        reject=setup.reject_setup_request,
        start_preflight=lambda req, rep: setup_preflight.start_preflight(
            setup_request=req, actor=rep
        ),
        claim_event="ClaimByokSetupRequest",
        reject_event="RejectByokSetupRequest",
        rejected_subject="Your BYOK setup request #{pk} was rejected",
    ),
    "reencryption": Kind(
        request_factory=ReencryptionRequestFactory,
        run_factory=ReencryptionPreflightFactory,
        claim=reencryption.claim_reencryption_request,
        reject=reencryption.reject_reencryption_request,
        start_preflight=lambda req, rep: reencryption.start_reencryption_preflight(
            request_id=req.pk, actor=rep
        ),
        claim_event="ClaimReencryptionRequest",
        reject_event="RejectReencryption",
        rejected_subject="Your re-encryption request #{pk} was rejected",
    ),
}


@pytest.fixture(params=list(KINDS))
def kind(request) -> Kind:
    return KINDS[request.param]


@pytest.fixture
def rep():
    return staff_user(ACCOUNT_REPS)


@pytest.fixture
def other_rep():
    return staff_user(ACCOUNT_REPS)


def test_second_rep_claiming_is_refused_with_the_assignee_named(kind, rep, other_rep):
    req = kind.request_factory()
    claimed = kind.claim(request_id=req.pk, rep=rep)
    assert (claimed.status, claimed.assignee, claimed.claimed_at is not None) == (
        "claimed",
        rep,
        True,
    )
    with pytest.raises(NotAllowed, match="already claimed"):
        kind.claim(request_id=req.pk, rep=other_rep)
    assert AuditEvent.objects.filter(event_name=kind.claim_event).count() == 1
    assert list(req.timeline.values_list("kind", flat=True)) == ["claimed"]


def test_claiming_a_request_that_does_not_exist_is_not_found(kind, rep):
    req = kind.request_factory()
    with pytest.raises(NotFound):
        kind.claim(request_id=req.pk + 1000, rep=rep)


def test_rep_who_did_not_claim_cannot_reject(kind, rep, other_rep):
    req = kind.request_factory()
    kind.claim(request_id=req.pk, rep=rep)
    with pytest.raises(NotAllowed, match="Only the assignee"):
        kind.reject(request_id=req.pk, rep=other_rep, reason="No.")
    req.refresh_from_db()
    assert req.status == "claimed"


def test_unclaimed_request_cannot_be_rejected(kind, rep):
    req = kind.request_factory()
    with pytest.raises(NotAllowed, match="claim it first"):
        kind.reject(request_id=req.pk, rep=rep, reason="No.")


def test_rejection_needs_a_reason(kind, rep):
    req = kind.request_factory()
    kind.claim(request_id=req.pk, rep=rep)
    with pytest.raises(NotAllowed, match="reason"):
        kind.reject(request_id=req.pk, rep=rep, reason="   ")


def test_reject_closes_the_request_and_tells_the_customer_after_commit(
    kind, rep, django_capture_on_commit_callbacks
):
    req = kind.request_factory()
    kind.claim(request_id=req.pk, rep=rep)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        kind.reject(request_id=req.pk, rep=rep, reason=" Wrong AWS account. ")
        assert mail.outbox == []  # nothing is sent before the commit
    assert callbacks
    req.refresh_from_db()
    assert (req.status, req.rejection_reason, req.closed_at is not None) == (
        "rejected",
        "Wrong AWS account.",
        True,
    )
    assert req.timeline.filter(kind="rejected", message="Wrong AWS account.").exists()
    event = AuditEvent.objects.get(event_name=kind.reject_event)
    assert event.record["requestParameters"] == {
        "requestId": req.pk,
        "reason": "Wrong AWS account.",
    }
    subject = kind.rejected_subject.format(pk=req.pk)
    notice = next(m for m in mail.outbox if m.subject.endswith(subject))
    assert "Wrong AWS account." in notice.body
    assert req.requested_by.email in notice.to and rep.email in notice.to


def test_rejected_request_cannot_be_claimed_again(kind, rep, other_rep):
    req = kind.request_factory()
    kind.claim(request_id=req.pk, rep=rep)
    kind.reject(request_id=req.pk, rep=rep, reason="No.")
    with pytest.raises(NotAllowed):
        kind.claim(request_id=req.pk, rep=other_rep)


def test_a_fresh_running_preflight_blocks_a_new_one(kind, rep):
    req = kind.request_factory()
    kind.claim(request_id=req.pk, rep=rep)
    running = kind.run_factory(request=req, status="running")
    with pytest.raises(NotAllowed, match=f"Preflight #{running.pk} .*still running"):
        kind.start_preflight(req, rep)


def test_lost_preflight_is_closed_as_timed_out_when_a_new_one_starts(kind, rep):
    req = kind.request_factory()
    kind.claim(request_id=req.pk, rep=rep)
    lost = kind.run_factory(request=req, status="queued")
    type(lost).objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(minutes=16))
    new = kind.start_preflight(req, rep)
    lost.refresh_from_db()
    assert (lost.status, lost.finished_at is not None) == ("failed", True)
    assert [c["cause"] for c in lost.checks] == ["timed-out"]
    assert "did not finish within 15 minutes" in lost.checks[0]["detail"]
    assert new.status == "queued" and new.pk != lost.pk
