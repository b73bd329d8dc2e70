"""One step call in a run (:class:`Invocation`), and what an earlier execution of a run
left behind (:class:`PreviousRun`, for resume).

An invocation is the unit every other part of the engine works on: the scheduler moves it
between waiting, ready and running; the recorder writes its step run; the cache decides
whether it needs to run at all. It holds its own state; the engine's ``Run`` is the only
place that changes it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._batch_sql import Link
from ._errors import StepFailedError
from ._futures import ArtifactFuture
from ._ids import new_id
from ._outcome import note_seen
from ._runner import StepResult
from ._scheduler import NO_DEPENDENTS
from ._types import EncodedJSON, ExecutionStatus, Produced

if TYPE_CHECKING:
    from ._engine import Run
    from ._step import Step

S = ExecutionStatus

_FINISHED = threading.Event()  # what a finished invocation nobody waited for returns as its event
_FINISHED.set()
# What released invocations share instead of their own (never mutated: only replaced).
_NO_PARAMS: dict[str, Any] = EncodedJSON()  # its JSON text made once, not once per row
_NO_INPUTS: dict[str, tuple[bool, list[tuple[Any, int | None]]]] = {}
_NO_UPSTREAM: list[Invocation] = []
_NO_ATTEMPTS: list[dict[str, Any]] = []


@dataclass
class PreviousRun:
    """What an earlier execution of a run left behind, for resuming it."""

    run_id: str
    name: str
    steps: dict[str, tuple[dict[str, Any], dict[str, Produced]]]  # invocation id -> (row, outputs)
    children: dict[str, str]  # child invocation id -> child run id
    substitutions: dict[str, str]  # the built-in {date}/{time} the run started with


class Invocation:
    """One step call in a run: its inputs, its state, and what it produced."""

    __slots__ = (
        "run", "id", "step", "position", "step_run_id", "params", "inputs", "upstream",
        "status", "finished", "outputs", "error", "exception", "_event", "dependents",
        "waiting", "cache_key", "attempt", "attempts", "start_time", "skip_reason", "recorded",
        "future", "handled", "durable_at", "config",
    )

    def __init__(self, run: Run, inv_id: str, step: Step[Any], position: int) -> None:
        self.run = run
        self.id = inv_id
        self.step = step
        self.position = position
        self.step_run_id = new_id()
        self.params: dict[str, Any] = _NO_PARAMS
        self.inputs: dict[str, tuple[bool, list[tuple[Any, int | None]]]] = {}
        self.upstream: list[Invocation] = []
        self.status = S.INITIALIZING
        self.finished = False
        self.outputs: dict[str, Produced] = {}
        self.error: dict[str, Any] | None = None
        self.exception: BaseException | None = None
        self._event: threading.Event | None = None  # made when someone waits (see ``event``)
        self.dependents: list[Invocation] = NO_DEPENDENTS  # replaced, never appended to, while empty
        self.waiting = 0
        self.cache_key: str | None = None
        self.attempt = 1
        self.attempts: list[dict[str, Any]] = _NO_ATTEMPTS  # replaced (never appended to) on each attempt
        self.start_time: float | None = None
        self.skip_reason: str | None = None
        self.recorded = False  # its step run row has been written (or queued)
        self.future: Future[StepResult] | None = None  # while submitted to an executor
        self.handled = False  # the body was given its failure (see _outcome)
        self.durable_at = 0  # the store's write number that makes its completion durable
        self.config: dict[str, Any] | None = None  # recorded instead of the step's (a map member's marker)

    @property
    def event(self) -> threading.Event:
        """Set once finished. Made only when someone waits for an unfinished invocation:
        an event (a lock, a condition and a deque) per step was most of the memory a
        finished step held. ``finished`` is set under the run's lock, so a waiter either
        sees it or makes the event before the finisher reads it."""
        event = self._event
        if event is None:
            if self.finished:
                return _FINISHED
            with self.run.lock:
                event = self._event
                if event is None:
                    event = self._event = _FINISHED if self.finished else threading.Event()
        return event

    def release(self) -> None:
        """A finished, successful invocation keeps only what later calls need: its identity,
        status and output references. Its inputs, parameters and attempts are recorded
        already; holding them made a run's memory grow with its length."""
        self.params = _NO_PARAMS
        self.inputs = _NO_INPUTS
        self.upstream = _NO_UPSTREAM
        self.attempts = _NO_ATTEMPTS
        self.cache_key = None

    @property
    def ok(self) -> bool:
        return self.status in (S.COMPLETED, S.CACHED)

    def wait(self) -> None:
        """Block until finished; raise :class:`StepFailedError` unless it succeeded."""
        if not self.finished:  # nothing runs while a static body compiles: never wait there
            self.run.ensure_not_compiling("wait for", self.id)
        self.event.wait()
        if self.durable_at:  # its result is about to be seen: committed first (see Dispatch.record_result)
            self.run.stores.metadata.durable(self.durable_at)
        if not self.ok:
            if self.status == S.STOPPED and isinstance(self.exception, KeyboardInterrupt):
                raise self.exception  # Ctrl-C while it ran in the body's thread: stop the body
            note_seen(self)
            raise self.failure()

    def failure(self) -> StepFailedError:
        if self.status == S.FAILED:
            err = self.error or {}
            message = f"step {self.id!r} failed: {err.get('type', 'Error')}: {err.get('message', '')}"
        else:
            message = f"step {self.id!r} did not run ({self.status}): {self.skip_reason}"
        return StepFailedError(
            message,
            invocation_id=self.id,
            step_run_id=self.step_run_id,
            original_exception=self.exception,
            error=self.error,
            load_step_run=self.run.reader().get_step_run,
        )

    def output_futures(self) -> Any:
        specs = self.step.outputs
        if not specs:
            return None
        if len(specs) == 1:
            return ArtifactFuture(self, specs[0].name)
        return tuple(ArtifactFuture(self, s.name) for s in specs)


def link(inv: Invocation, artifact: Produced, direction: str, name: str, position: int = 0,
          item_index: int | None = None) -> Link:
    """A lineage row: ``inv`` consumed (input) or produced (output) ``artifact``, in the
    order of ``LINK_COLUMNS`` (a tuple: a reduce's million links are held at once)."""
    return (inv.step_run_id, artifact.id, direction, name, position, item_index)


def input_links(inv: Invocation, input_ids: list[tuple[str, int, Produced, int | None]]) -> list[Link]:
    step_run_id = inv.step_run_id
    return [(step_run_id, p.id, "input", name, pos, index) for name, pos, p, index in input_ids]


class Substitutions(dict):  # type: ignore[type-arg]
    """Values for ``{placeholders}``; a missing one raises ``KeyError`` (not the empty string)."""

    def __missing__(self, key: str) -> str:
        raise KeyError(key)
