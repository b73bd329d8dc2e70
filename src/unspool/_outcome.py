"""Which failures a pipeline body handled.

A dynamic body sees a step's failure as a :class:`StepFailedError` (at the call, at
``future.result()``/``load()``, when a map result is consumed, or at a step that was skipped
because of it) and a child run's failure as the exception the child raised. When the body
then returns normally it has handled those failures: the run is ``completed`` (the failed
steps stay ``failed`` and are listed in the run's metadata as ``handled_failures``). A
failure the body never saw still fails the run, as does any failure of a static pipeline
or under ``STOP_ON_FAILURE``/``FAIL_FAST`` (where a failure means "stop the run").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._types import ExecutionMode, ExecutionStatus

if TYPE_CHECKING:
    from ._engine import Run
    from ._invocation import Invocation


def note_seen(inv: Invocation) -> None:
    """The body is about to get ``inv``'s failure: it and the failures that made it unrunnable."""
    stack = [inv]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.handled = True
        stack.extend(up for up in current.upstream if not up.ok)


def _can_handle(run: Run) -> bool:
    return bool(run.config.dynamic) and run.config.execution_mode == ExecutionMode.CONTINUE_ON_FAILURE


def unhandled_steps(run: Run) -> list[Invocation]:
    """Failed invocations that fail the run (the body returned normally)."""
    if not _can_handle(run):
        return list(run.failed)
    return [inv for inv in run.failed if not inv.handled]


def unhandled_children(run: Run) -> list[Any]:
    if not _can_handle(run):
        return list(run.failed_children)
    return [child for child in run.failed_children if not child.handled]


def handled_steps(run: Run) -> list[str]:
    """Ids of failed invocations the body handled (recorded in the run's metadata)."""
    if not _can_handle(run):
        return []
    return [inv.id for inv in run.failed if inv.handled and inv.status == ExecutionStatus.FAILED]
