"""The request kinds that go through review, registered by their apps.

The representatives' queue lists every kind on one page; each app registers its kind in
``AppConfig.ready()`` so this package never imports the apps built on it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RequestKind:
    key: str  # the template's prefix: ``<key>_queue`` and ``<key>_counts``
    label: str
    queue: Callable[..., Any]  # open requests by default; the filter form's fields as kwargs
    counts: Callable[[], dict[str, int]]
    filter_form: type | None = None  # a form whose cleaned values filter the queue


_KINDS: dict[str, RequestKind] = {}


def register(kind: RequestKind) -> None:
    _KINDS[kind.key] = kind


def registered() -> list[RequestKind]:
    return list(_KINDS.values())
