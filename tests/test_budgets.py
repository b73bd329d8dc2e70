"""Budgets: hard limits checked before the offending call starts anything."""

from __future__ import annotations

import threading
import time

import pytest

from unspool import Budget, BudgetExceeded, Client, get_step_context, log_metadata, pipeline, step


@step(enable_cache=False)
def unit(x: int) -> int:
    return x


def _last_run():
    return Client().list_pipeline_runs()[0]


def test_max_steps_raises_at_the_offending_call_before_it_starts() -> None:
    @pipeline(dynamic=True, budget=Budget(max_steps=3))
    def p():
        for i in range(5):
            unit(i)

    with pytest.raises(BudgetExceeded, match=r"max_steps=3 exceeded: 3 used, this call needs 1 more") as info:
        p()
    assert (info.value.limit, info.value.value, info.value.used) == ("max_steps", 3, 3)
    run = _last_run()
    assert run.status.value == "failed"
    assert "max_steps" in run.error["message"]
    assert len(run.steps) == 3  # the fourth call never became a step
    assert run.metadata["budget_used"]["steps"] == 3


def test_max_steps_counts_a_whole_map_before_any_invocation_starts() -> None:
    @pipeline(dynamic=True, budget=Budget(max_steps=5))
    def p():
        unit.map([1, 2, 3, 4, 5, 6])

    with pytest.raises(BudgetExceeded, match="this call needs 6 more"):
        p()
    assert _last_run().steps == {}


def test_budget_exceeded_can_be_caught_to_finish_gracefully() -> None:
    @pipeline(dynamic=True, budget=Budget(max_steps=2))
    def p():
        done = 0
        try:
            while True:
                unit(done)
                done += 1
        except BudgetExceeded:
            pass
        return done

    run = p()
    assert run.status.value == "completed"
    assert len(run.steps) == 2


def test_max_fan_out_bounds_one_map_or_product() -> None:
    @pipeline(dynamic=True, budget=Budget(max_fan_out=4))
    def p():
        unit.map([1, 2, 3, 4])  # fine
        unit.map(list(range(5)))  # too wide

    with pytest.raises(BudgetExceeded, match="max_fan_out=4"):
        p()
    assert len(_last_run().steps) == 4


def test_max_parallelism_bounds_steps_running_at_once() -> None:
    changed = threading.Condition()
    state = {"now": 0, "peak": 0}

    @step(enable_cache=False)
    def busy(x: int) -> int:
        with changed:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            changed.notify_all()
            # Stay until two ran at once (so the bound is reached whatever the machine's load), or
            # until the others had every chance to start: then the bound held them back.
            changed.wait_for(lambda: state["peak"] >= 2, timeout=60)
            state["now"] -= 1
        return x

    @pipeline(dynamic=True, budget=Budget(max_parallelism=2))
    def p():
        busy.map(list(range(12))).wait()

    p()
    assert state["peak"] == 2


def test_max_duration_stops_new_calls() -> None:
    @pipeline(dynamic=True, budget=Budget(max_duration_s=1.0))  # long enough for unit(1) on a busy machine
    def p():
        unit(1)
        time.sleep(1.05)
        unit(2)

    with pytest.raises(BudgetExceeded, match="max_duration_s=1.0"):
        p()
    assert list(_last_run().steps) == ["unit"]


def test_budget_via_with_options_and_step_context_shows_remaining_budget() -> None:
    seen = []

    @step(enable_cache=False)
    def inspect_context() -> int:
        ctx = get_step_context()
        seen.append((ctx.invocation_id, ctx.step_name, ctx.attempt, ctx.budget_remaining["steps"]))
        log_metadata({"score": 0.5})
        log_metadata({"rows": 3}, artifact_name="output")
        return 1

    @pipeline(dynamic=True)
    def p():
        inspect_context()
        inspect_context()

    run = p.with_options(budget=Budget(max_steps=10))()
    assert seen == [("inspect_context", "inspect_context", 1, 9), ("inspect_context_2", "inspect_context", 1, 8)]
    step_run = run.steps["inspect_context"]
    assert step_run.metadata["score"] == 0.5
    assert step_run.output.metadata["rows"] == 3
    assert run.config["budget"]["max_steps"] == 10
    assert run.metadata["budget_used"]["steps"] == 2
