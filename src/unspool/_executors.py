"""Executors: where a step spec turns into a step result.

The engine meets every executor at one narrow seam, ``submit(spec, done)``: run the spec
somewhere, then call ``done(result)`` from any thread. Threads today; processes and Ray
plug in here without touching the engine.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol

from ._runner import StepResult, StepSpec, describe_error, run_step

Done = Callable[[StepResult], None]


class Executor(Protocol):
    name: str

    def submit(self, spec: StepSpec, done: Done) -> None: ...

    def shutdown(self) -> None: ...


class ThreadExecutor:
    """Runs steps in a bounded pool of threads of the orchestrating process."""

    name = "inline"

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="unspool-step")

    def submit(self, spec: StepSpec, done: Done) -> None:
        self._pool.submit(_run_and_report, spec, done)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _run_and_report(spec: StepSpec, done: Done) -> None:
    try:
        result = run_step(spec)
    except BaseException as exc:  # pragma: no cover - run_step reports step errors itself
        result = StepResult(ok=False, error=describe_error(exc), exception=exc)
    done(result)
