"""The event stream: every status change of a run or step, delivered to subscribers.

The CLI's live view subscribes to it today; a dashboard can subscribe tomorrow. Emitting
costs nothing when nobody listens. A subscriber that raises is reported once and dropped
from nothing else: the run goes on.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ._types import ExecutionStatus


@dataclass(frozen=True)
class Event:
    kind: str  # "run" | "step"
    run_id: str
    status: ExecutionStatus
    invocation_id: str | None = None
    step_name: str | None = None
    step_run_id: str | None = None
    detail: str | None = None
    time: float = field(default_factory=time.time)
    members: tuple[str, ...] = ()  # kind "map": the invocation ids one map/product call made


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers = [*self._subscribers, fn]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not fn]

        return unsubscribe

    def emit(self, event: Event) -> None:
        for fn in self._subscribers:
            try:
                fn(event)
            except Exception as exc:  # a listener never breaks a run
                print(f"unspool: event subscriber {fn!r} raised {exc!r}", file=sys.__stderr__)


events = EventBus()
"""The process-wide event bus."""
