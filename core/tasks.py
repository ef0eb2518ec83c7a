"""Argument checks shared by every app's Celery tasks (validate at the edge), and sending a
task by name."""

from importlib import import_module


def positive_id(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive integer id, got {value!r}")
    return value


def positive_ids(values) -> list[int]:
    if not isinstance(values, list):
        raise ValueError("expected a list of ids")
    return [positive_id(v) for v in values]


def enqueue(task_name: str, *args, eta=None) -> None:
    """Send a registered Celery task by name.

    Services hand work to tasks by name, so a services module never imports its tasks module
    (which imports the services): no import cycle, and no import hidden inside a function.
    ``tests/test_task_names.py`` checks every name given here is a registered task.
    """
    from celery import current_app

    # Workers import every tasks module at start; a web process may not have yet.
    import_module(task_name.rsplit(".", 1)[0])
    task = current_app.tasks[task_name]
    if eta is not None:
        task.apply_async(args=list(args), eta=eta)
    else:
        task.delay(*args)


def enqueue_on_commit(task_name: str, *args, robust: bool = False) -> None:
    """``enqueue`` once the current transaction commits (at once outside a transaction)."""
    from django.db import transaction

    transaction.on_commit(lambda: enqueue(task_name, *args), robust=robust)
