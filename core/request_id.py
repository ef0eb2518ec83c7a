"""The request ID: one identifier per web request, carried into the Celery tasks it enqueues,
every log line written meanwhile (``request_id``) and the ``requestID`` of the portal's own
audit events, so an operator can follow one action from the access log to the audit log.

A web request takes the ``X-Request-ID`` its proxy sent when it looks like one (letters,
digits, ``.-_``, 8–64 characters), else a new UUID; the response carries it back. A task
takes the ID of whoever enqueued it (a Celery message header), or a new one (beat).
"""

from __future__ import annotations

import logging
import re
import uuid
from contextlib import contextmanager
from contextvars import ContextVar, Token

_CURRENT: ContextVar[str] = ContextVar("byok_request_id", default="")
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._-]{8,64}")
#: The Celery message header that carries the ID to the task.
TASK_HEADER = "byok_request_id"


def current_request_id() -> str:
    """The ID of the request or task being served; "" outside of both."""
    return _CURRENT.get()


def new_request_id() -> str:
    return str(uuid.uuid4())


def acceptable(candidate: str | None) -> str | None:
    """``candidate`` if it is a well-formed request ID (from a proxy or a task header)."""
    if candidate and _ACCEPTABLE.fullmatch(candidate):
        return candidate
    return None


def enter(request_id: str) -> Token:
    """Makes ``request_id`` the current one until :func:`leave` with the returned token."""
    return _CURRENT.set(request_id)


def leave(token: Token) -> None:
    _CURRENT.reset(token)


@contextmanager
def request_id_set(request_id: str):
    """Makes ``request_id`` the current one for the block (a request, a task)."""
    token = enter(request_id)
    try:
        yield request_id
    finally:
        leave(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record ("-" outside of a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _CURRENT.get() or "-"
        return True
