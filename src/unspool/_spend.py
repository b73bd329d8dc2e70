"""Spend budgets: user-named limits (tokens, usd, calls, ...) that steps charge.

A step charges through its context (``get_step_context().spend(tokens=1200, usd=0.002)``);
the charges travel back in the step result (also from an isolated worker), and the
orchestrating process, the single writer of the metadata store, adds them up here:

* per step run, over all its attempts: ``step_metadata["spend"]``;
* per run, children included: ``run_metadata["spend"]`` (and ``budget_used["spend"]``);
  a resumed run starts from what its earlier execution's steps spent.

``Budget(spend={"tokens": 200_000, "usd": 0.5})`` limits a run and everything below it. Once
a total reaches its limit the *next* step or child-pipeline call raises
:class:`BudgetExceeded` before it starts, like the built-in limits; steps already running
finish (so a run can end a little over its limit: by what the steps in flight charge).
A running step sees what was left when it started in ``budget_remaining["spend"]`` and,
after its own charges, in ``get_step_context().spend_remaining``.

The engine calls :func:`charge`, :func:`check`, :func:`remaining` and :func:`totals`; the
ledger lives on the run object and is guarded by one lock.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from typing import Any, Iterator

from ._errors import BudgetExceeded

_lock = threading.Lock()
_exempt: contextvars.ContextVar[bool] = contextvars.ContextVar("unspool_spend_exempt", default=False)


@contextlib.contextmanager
def spend_exempt() -> Iterator[None]:
    """Step and child calls in this block are not refused by spend limits.

    For the work that must still happen once a spend limit is reached, typically the step
    that aggregates and reports what was found. What those steps charge still counts::

        try:
            explore()
        except BudgetExceeded:
            pass
        with spend_exempt():
            report(results)
    """
    token = _exempt.set(True)
    try:
        yield
    finally:
        _exempt.reset(token)


def validate(spend: Any) -> dict[str, float] | None:
    """``Budget.spend``: a mapping of names to positive numbers, or None."""
    if spend is None:
        return None
    if not isinstance(spend, dict) or not spend:
        raise ValueError(f"Budget.spend must be a non-empty dict of name -> limit, got {spend!r}")
    for key, value in spend.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"Budget.spend keys must be identifiers (tokens, usd, calls), got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
            raise ValueError(f"Budget.spend[{key!r}] must be a positive number, got {value!r}")
    return dict(spend)


def add_charges(into: dict[str, float], amounts: dict[str, Any]) -> None:
    """Add a step's charges to ``into`` (what ``StepContext.spend`` does)."""
    for key, value in amounts.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
            raise ValueError(f"spend({key}={value!r}): amounts must be non-negative numbers")
        into[key] = into.get(key, 0) + value


def _ledger(run: Any) -> dict[str, Any]:
    ledger = run.__dict__.get("_spend_ledger")
    if ledger is None:
        ledger = run.__dict__.setdefault("_spend_ledger", {"total": {}, "steps": {}})
    return ledger


def charge(run: Any, invocation_id: str, amounts: dict[str, float] | None) -> dict[str, float] | None:
    """Record one attempt's charges on the run and its ancestors; the step's total so far."""
    with _lock:
        steps = _ledger(run)["steps"]
        if amounts:
            mine = steps.setdefault(invocation_id, {})
            for key, value in amounts.items():
                mine[key] = _tidy(mine.get(key, 0) + value)
            node = run
            while node is not None:
                total = _ledger(node)["total"]
                for key, value in amounts.items():
                    total[key] = _tidy(total.get(key, 0) + value)
                node = node.parent
        spent = steps.get(invocation_id)
        return dict(spent) if spent else None


def _limits_and_totals(run: Any) -> Iterator[tuple[dict[str, float], dict[str, float]]]:
    """``(spend limits, totals so far)`` of the run and each ancestor that has spend limits."""
    node = run
    while node is not None:
        budget = node.config.budget
        limits = getattr(budget, "spend", None) if budget is not None else None
        if limits:
            with _lock:
                total = dict(_ledger(node)["total"])
            yield limits, total
        node = node.parent


def check(run: Any) -> None:
    """Raise :class:`BudgetExceeded` if the run or an ancestor reached a spend limit."""
    if _exempt.get():
        return
    for limits, total in _limits_and_totals(run):
        for key, limit in limits.items():
            used = total.get(key, 0)
            if used >= limit:
                raise BudgetExceeded(f"spend.{key}", limit, used, 0)


def remaining(run: Any) -> dict[str, float] | None:
    """The smallest headroom per key over the run and its ancestors (None: no spend limit)."""
    left: dict[str, float] = {}
    for limits, total in _limits_and_totals(run):
        for key, limit in limits.items():
            headroom = _tidy(limit - total.get(key, 0))
            left[key] = min(left.get(key, headroom), headroom)
    return left or None


def totals(run: Any) -> dict[str, float]:
    """What the run and its children charged so far."""
    with _lock:
        return dict(_ledger(run)["total"])


def with_remaining(run: Any, budget_remaining: dict[str, Any] | None) -> dict[str, Any] | None:
    """The step's ``budget_remaining`` with a ``spend`` entry when a spend limit applies."""
    left = remaining(run)
    if left is None:
        return budget_remaining
    return {**(budget_remaining or {}), "spend": left}


def _tidy(value: float) -> float:
    """Keep integer sums integers and float sums free of 0.1 + 0.2 noise."""
    if isinstance(value, int):
        return value
    return round(value, 12)
