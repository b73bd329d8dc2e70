"""Budgets: hard limits of a run and its children (``@pipeline(budget=Budget(...))``).

``max_steps`` and ``max_depth`` count over the whole tree of runs (the root's budget
applies); ``max_fan_out`` and ``max_duration_s`` are checked against the run's own budget.
Every check happens before anything starts, so a call over budget raises
:class:`BudgetExceeded` in the body and leaves nothing half-done.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import _spend
from ._errors import BudgetExceeded, PipelineError
from ._outcome import handled_steps

if TYPE_CHECKING:
    from ._engine import Run


def check(run: Run, new_steps: int, fan_out: int | None = None) -> None:
    """Raise :class:`BudgetExceeded` if ``new_steps`` more steps (``fan_out`` at once) would
    exceed a limit."""
    budget = run.config.budget
    root = run.root()
    if budget is not None:
        if budget.max_duration_s is not None and time.time() - run.started > budget.max_duration_s:
            raise BudgetExceeded("max_duration_s", budget.max_duration_s, time.time() - run.started)
        if fan_out is not None and budget.max_fan_out is not None and fan_out > budget.max_fan_out:
            raise BudgetExceeded("max_fan_out", budget.max_fan_out, 0, fan_out)
    root_budget = root.config.budget
    if root_budget is not None and root_budget.max_steps is not None and root.steps_used + new_steps > root_budget.max_steps:
        raise BudgetExceeded("max_steps", root_budget.max_steps, root.steps_used, new_steps)
    _spend.check(run)


MAX_CHILD_DEPTH = 100  # child runs nested deeper than this (without a budget) are a recursion without end


def check_depth(run: Run) -> None:
    """Raise :class:`BudgetExceeded` if a child of ``run`` would nest deeper than ``max_depth``."""
    depth, parent = 1, run
    while parent.parent is not None:
        depth, parent = depth + 1, parent.parent
    root_budget = parent.config.budget
    if root_budget is not None and root_budget.max_depth is not None and depth > root_budget.max_depth:
        raise BudgetExceeded("max_depth", root_budget.max_depth, depth - 1, 1)
    if depth > MAX_CHILD_DEPTH and (root_budget is None or root_budget.max_depth is None):
        raise PipelineError(  # before Python's own recursion limit strikes at a random place
            f"a child pipeline would run {depth} levels deep (at most {MAX_CHILD_DEPTH} without a "
            "budget); give a pipeline that calls itself a condition that ends the recursion, or set "
            "Budget(max_depth=...)"
        )


def count_steps(run: Run, n: int) -> None:
    """``n`` more steps were made: count them in ``run`` and every run above it."""
    current: Run | None = run
    while current is not None:
        current.steps_used += n
        current = current.parent


def used(run: Run) -> dict[str, Any]:
    used = {
        "steps": run.steps_used,
        "duration_s": round(time.time() - run.started, 3),
        "max_parallelism": run.scheduler.slots,
    }
    if run.config.budget is not None and run.config.budget.spend:
        used["spend"] = _spend.totals(run)
    return used


def remaining(run: Run) -> dict[str, Any] | None:
    """What is left of the run's budget (a step sees it in ``get_step_context()``)."""
    budget = run.config.budget
    if budget is None:
        return None
    return {
        "steps": None if budget.max_steps is None else budget.max_steps - run.steps_used,
        "duration_s": None if budget.max_duration_s is None else budget.max_duration_s - (time.time() - run.started),
        "max_fan_out": budget.max_fan_out,
        "max_parallelism": budget.max_parallelism,
    }


def run_metadata(run: Run) -> dict[str, Any]:
    """What a finished run records in its metadata: step counts, and budget use if it had one."""
    meta: dict[str, Any] = {"step_counts": run.status_counts()}
    if handled_steps(run):
        meta["handled_failures"] = handled_steps(run)
    if run.config.budget is not None:
        meta["budget_used"] = used(run)
    spent = _spend.totals(run)
    if spent:
        meta["spend"] = spent
    return meta
