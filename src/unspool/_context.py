"""What is running here: the current run (a pipeline body) and the current step.

Two context variables, importing nothing but the errors, so that authoring code
(``@step``, ``@pipeline``) can find the run it is called in without importing the engine:

* the **current run** is set by the engine while a pipeline body executes. A step called
  in a body hands the call to it (``run.call_step``); outside any body a step is a plain
  function. The run is typed :class:`BodyRun`, the part of the engine's ``Run`` a body
  talks to.
* the **current step** (:class:`StepContext`) is set by ``run_step`` while a step function
  executes, in whatever process or thread it runs; ``get_step_context()`` reads it.

Inside a step there is no current run, even in the orchestrator's own threads: a step
cannot schedule other steps. This module imports only ``_errors``.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Protocol

from ._errors import PipelineError, UnspoolError
from ._spend import add_charges


class BodyRun(Protocol):
    """The operations a pipeline body performs on the run executing it."""

    def call_step(self, step: Any, args: tuple[Any, ...], kwargs: dict[str, Any], mode: str) -> Any: ...
    def map_step(self, step: Any, args: tuple[Any, ...], kwargs: dict[str, Any], product: bool) -> Any: ...
    def call_child(self, pipeline: Any, args: tuple[Any, ...], kwargs: dict[str, Any], mode: str) -> Any: ...
    def embed_child(self, pipeline: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...
    def order_after(self, later: Any, earlier: Any) -> None: ...


@dataclass
class StepContext:
    """What a running step can know about itself (``get_step_context()``)."""

    run_id: str
    step_run_id: str
    invocation_id: str
    step_name: str
    pipeline_name: str
    attempt: int
    budget_remaining: dict[str, Any] | None
    step_metadata: dict[str, Any] = field(default_factory=dict)
    artifact_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)

    def spend(self, **amounts: float) -> None:
        """Charge this step's use of something counted (``tokens=1200, usd=0.003``).

        Charges are added up per step and per run (children included) by the orchestrator and
        checked against ``Budget(spend=...)`` before every later step call (``_spend.py``).
        """
        add_charges(self.spent, amounts)

    @property
    def spend_remaining(self) -> dict[str, float] | None:
        """Per spend limit: what the run had left when this step started, less its own charges."""
        left = (self.budget_remaining or {}).get("spend")
        if left is None:
            return None
        return {key: value - self.spent.get(key, 0) for key, value in left.items()}

    run_reader: Callable[[str], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def pipeline_run(self) -> Any:
        """The stored run this step belongs to (a ``PipelineRun``), read through the reader the
        step's runner gave (this module stays a leaf: it knows no store)."""
        if self.run_reader is None:
            raise UnspoolError("this step context cannot read the metadata store (no run reader was given)")
        return self.run_reader(self.run_id)

    @property
    def step_run(self) -> Any:
        """This step run: ``id``, ``name``, ``invocation_id``, ``attempt``, ``pipeline_run_id``."""
        return SimpleNamespace(id=self.step_run_id, name=self.step_name, invocation_id=self.invocation_id,
                               attempt=self.attempt, pipeline_run_id=self.run_id)


_run: contextvars.ContextVar[Any] = contextvars.ContextVar("unspool_run", default=None)
_step: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar("unspool_step_context", default=None)


# -- the current run ---------------------------------------------------------------------------

def enter_run(run: Any) -> contextvars.Token[Any]:
    """Make ``run`` the current run; pass the token to :func:`leave_run`."""
    return _run.set(run)


def leave_run(token: contextvars.Token[Any]) -> None:
    _run.reset(token)


def current_run() -> Any:
    """The run whose pipeline body is executing in this context (None inside a step)."""
    run = _run.get()
    if run is None or _step.get() is not None:
        return None
    return run


def require_body(what: str) -> Any:
    """The current run; a :class:`PipelineError` outside a pipeline body or inside a step."""
    if _step.get() is not None:
        raise PipelineError(f"{what} is not allowed inside a step; call it from a pipeline body")
    run = _run.get()
    if run is None:
        raise PipelineError(f"{what} can only be used inside a dynamic pipeline body")
    return run


# -- the current step ------------------------------------------------------------------------------

def enter_step(context: StepContext) -> contextvars.Token[StepContext | None]:
    return _step.set(context)


def leave_step(token: contextvars.Token[StepContext | None]) -> None:
    _step.reset(token)


def get_step_context() -> StepContext:
    """The context of the step running in this thread; an error outside a step."""
    ctx = _step.get()
    if ctx is None:
        raise UnspoolError("get_step_context() can only be called inside a running step")
    return ctx


INFERRED = "\x00inferred"  # log_metadata(infer_artifact=True): the step's only output


def current_step() -> StepContext | None:
    """The context of the step running in this thread, or None."""
    return _step.get()


def in_step() -> bool:
    return _step.get() is not None
