"""The Celery application: configured from Django settings (``CELERY_*``), tasks autodiscovered.

Each task runs under the request ID of whoever enqueued it (``core.request_id``): the message
carries it in a header, set when the task is published; a task nobody's request enqueued
(beat) gets its own.
"""

import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

from core import request_id

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "byokportal.settings")

app = Celery("byokportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_tokens: dict[str, object] = {}  # task id → the token to leave its request ID with


@before_task_publish.connect
def carry_request_id(headers=None, **_kwargs) -> None:
    if headers is not None and request_id.current_request_id():
        headers.setdefault(request_id.TASK_HEADER, request_id.current_request_id())


@task_prerun.connect
def enter_request_id(task_id=None, task=None, **_kwargs) -> None:
    carried = request_id.acceptable(getattr(task.request, request_id.TASK_HEADER, None))
    # An eager task (tests, make run's inline calls) keeps the request it runs inside.
    chosen = carried or request_id.current_request_id() or request_id.new_request_id()
    _tokens[task_id] = request_id.enter(chosen)


@task_postrun.connect
def leave_request_id(task_id=None, **_kwargs) -> None:
    token = _tokens.pop(task_id, None)
    if token is not None:
        request_id.leave(token)
