"""Failed sign-ins and wrong one-time codes in the audit log: counted, never a flood.

Each failure used to append an event to every org of the person (and to their SIEM feeds), also
while the address was locked out, so anyone who knew an admin's e-mail address could fill a
tenant's log. Now an address gets at most one event per kind and window
(``SIGN_IN_FAILURE_WINDOW_S``, aligned to the clock):

- the first failure of a window is written at once (an alert needs no wait);
- later ones in that window are counted in a :class:`~security.models.FailureTally`;
- the count is written as one event, with ``failureCount``, by the first failure after the
  window (which is then that window's event) or, if none comes, by the beat
  (:func:`report_closed_windows`, every minute).

Every failure is in exactly one event's ``failureCount``: summed over the events they give the
number of failures. The tally is locked before the chain heads (the rule: chain heads last).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.request_context import client_ip, user_agent
from audit.services import record_event, user_identity_for
from security.models import FailureTally

SIGN_IN = "ConsoleLogin"
ONE_TIME_CODE = "CheckMfa"
#: Client addresses kept per pending count (the most recent ones).
MAX_SOURCE_IPS = 10
#: A quiet address's tally is forgotten after this long.
FORGET_AFTER = timedelta(days=1)


def window_start(moment: datetime) -> datetime:
    seconds = max(1, int(settings.SIGN_IN_FAILURE_WINDOW_S))
    return datetime.fromtimestamp(int(moment.timestamp()) // seconds * seconds, tz=UTC)


def record_failure(
    *, event_name: str, username: str | None, request, locked_out: bool = False, now=None
) -> bool:
    """Count one failed attempt; ``True`` if it was written to the audit log at once."""
    now = now or timezone.now()
    window = window_start(now)
    with transaction.atomic():
        tally = _locked_tally(event_name, (username or "").strip().lower()[:254])
        tally.pending += 1
        tally.pending_locked_out += int(bool(locked_out))
        tally.first_pending_at = tally.first_pending_at or now
        tally.last_pending_at = now
        address = client_ip(request)
        if address:
            addresses = [a for a in tally.source_ips if a != address] + [address]
            tally.source_ips = addresses[-MAX_SOURCE_IPS:]
        tally.user_agent = user_agent(request)
        if tally.reported_window is not None and tally.reported_window >= window:
            tally.save()
            return False
        _report(tally, window)
        return True


def report_closed_windows(*, now=None) -> int:
    """Write the count of every window that closed with failures not yet in the log."""
    now = now or timezone.now()
    window = window_start(now)
    due = FailureTally.objects.filter(pending__gt=0).filter(
        Q(reported_window__lt=window) | Q(reported_window__isnull=True)
    )
    reported = 0
    for pk in due.values_list("pk", flat=True):
        with transaction.atomic():
            tally = FailureTally.objects.select_for_update().filter(pk=pk).first()
            if tally is None or tally.pending == 0:
                continue
            if tally.reported_window is not None and tally.reported_window >= window:
                continue  # a failure reported it meanwhile
            _report(tally, window)
            reported += 1
    FailureTally.objects.filter(pending=0, reported_window__lt=now - FORGET_AFTER).delete()
    return reported


def _locked_tally(event_name: str, username: str) -> FailureTally:
    lookup = {"event_name": event_name, "username": username}
    tally = FailureTally.objects.select_for_update().filter(**lookup).first()
    if tally is not None:
        return tally
    try:
        with transaction.atomic():
            FailureTally.objects.create(**lookup)
    except IntegrityError:
        pass  # a concurrent failure created it first
    return FailureTally.objects.select_for_update().get(**lookup)


def _report(tally: FailureTally, window: datetime) -> None:
    """One event per chain of the person (the vendor chain for an unknown address)."""
    user = None
    if tally.username:
        user = get_user_model().objects.filter(email__iexact=tally.username).first()
    orgs = list(user.organizations.all()) if user is not None else []
    if tally.event_name == SIGN_IN:
        identity = (
            {"type": "PortalUser", "userName": tally.username}
            if tally.username
            else {"type": "Unknown"}
        )
    else:
        identity = user_identity_for(user) if user is not None else {"type": "Unknown"}
    locked = tally.pending_locked_out > 0
    for org in orgs or [None]:
        record_event(
            org=org,
            event_name=tally.event_name,
            actor=user,
            user_identity=identity,
            event_type="AwsConsoleSignIn",
            source_ip=(tally.source_ips or [""])[-1],
            user_agent=tally.user_agent,
            request_parameters={
                "failureCount": tally.pending,
                "lockedOutCount": tally.pending_locked_out,
                "firstFailureTime": _iso(tally.first_pending_at),
                "lastFailureTime": _iso(tally.last_pending_at),
                "sourceIPAddresses": list(tally.source_ips),
                "windowSeconds": int(settings.SIGN_IN_FAILURE_WINDOW_S),
            },
            response_elements={tally.event_name: "Failure"},
            error_code="AccountLocked" if locked else "Failed authentication",
            error_message=_message(tally, locked),
            read_only=False,
        )
    tally.reported_window = window
    tally.pending = tally.pending_locked_out = 0
    tally.first_pending_at = tally.last_pending_at = None
    tally.source_ips = []
    tally.save()


def _message(tally: FailureTally, locked: bool) -> str:
    what = "wrong one-time code" if tally.event_name == ONE_TIME_CODE else "failed sign-in attempt"
    if tally.pending == 1:
        text = (
            "Wrong or throttled one-time code."
            if tally.event_name == ONE_TIME_CODE
            else "Incorrect e-mail address or password."
        )
    else:
        text = (
            f"{tally.pending} {what}s between {_iso(tally.first_pending_at)} and "
            f"{_iso(tally.last_pending_at)}."
        )
    if locked:
        text += (
            f" {tally.pending_locked_out} of them hit the lockout: sign-in refused until the "
            "lock ends."
        )
    return text


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None
