"""Child pipelines: called, submitted and embedded, with their runs linked to the parent."""

from __future__ import annotations

import threading

import pytest

from unspool import Budget, BudgetExceeded, Client, PipelineError, StepFailedError, pipeline, step


@step
def produce_number() -> int:
    return 42


@step
def consume_number(value: int) -> int:
    return value + 1


@pipeline(dynamic=True)
def child_pipeline():
    return produce_number()


def test_sync_child_creates_a_linked_child_run_whose_output_feeds_the_parent() -> None:
    @pipeline(dynamic=True)
    def parent_pipeline():
        child_output = child_pipeline()
        consume_number(child_output)

    run = parent_pipeline()
    assert list(run.steps) == ["consume_number"]
    assert run.steps["consume_number"].output.load() == 43
    children = run.child_runs
    assert [c.invocation_id for c in children] == ["pipeline:child_pipeline"]
    child = children[0]
    assert child.parent_run_id == run.id
    assert child.pipeline_name == "child_pipeline"
    assert child.status.value == "completed"
    assert list(child.steps) == ["produce_number"]
    # lineage crosses the run boundary
    produced = child.steps["produce_number"].output
    assert [s.id for s in produced.consumers] == [run.steps["consume_number"].id]


def test_submitted_children_run_concurrently_and_ids_follow_call_order() -> None:
    barrier = threading.Barrier(2, timeout=60)

    @step(enable_cache=False)
    def meet(x: int) -> int:
        barrier.wait()
        return x

    @pipeline(dynamic=True)
    def child(x: int):
        return meet(x)

    @pipeline(dynamic=True)
    def parent():
        a = child.submit(1)
        b = child.submit(2)
        assert (a.load(), b.load()) == (1, 2)
        consume_number(b)

    run = parent()
    assert sorted(c.invocation_id for c in run.child_runs) == ["pipeline:child", "pipeline:child_2"]
    assert run.steps["consume_number"].output.load() == 3


def test_embed_runs_the_child_body_inside_the_parent_run() -> None:
    @pipeline(dynamic=True)
    def parent_pipeline_inline():
        child_output = child_pipeline.embed()
        consume_number(child_output)

    run = parent_pipeline_inline()
    assert list(run.steps) == ["produce_number", "consume_number"]
    assert run.child_runs == []


def test_child_outputs_none_and_tuple() -> None:
    @step
    def pair() -> tuple[int, int]:
        return 1, 2

    @pipeline(dynamic=True)
    def gives_tuple():
        return pair()

    @pipeline(dynamic=True)
    def gives_none():
        produce_number()

    @pipeline(dynamic=True)
    def parent():
        assert gives_none() is None
        a, b = gives_tuple()
        consume_number(b)

    run = parent()
    assert run.steps["consume_number"].output.load() == 3


def test_clear_errors_for_static_children_and_misplaced_calls() -> None:
    @pipeline
    def static_child():
        produce_number()

    @pipeline(dynamic=True)
    def calls_static():
        static_child()

    with pytest.raises(PipelineError, match="only dynamic pipelines"):
        calls_static()

    with pytest.raises(PipelineError, match="only be used inside a dynamic pipeline body"):
        child_pipeline.embed()

    @step
    def calls_child_inside_step() -> int:
        child_pipeline.submit()
        return 1

    @pipeline(dynamic=True)
    def p():
        calls_child_inside_step()

    with pytest.raises(StepFailedError, match="not allowed inside a step"):
        p()


def test_failed_child_fails_the_parent_unless_caught() -> None:
    @step
    def broken() -> int:
        raise ValueError("child broke")

    @pipeline(dynamic=True)
    def bad_child():
        broken()

    @pipeline(dynamic=True)
    def parent(catch: bool):
        if catch:
            try:
                bad_child()
            except StepFailedError:
                pass
        else:
            bad_child()
        produce_number()

    run = parent(True)  # caught: the parent handled it
    assert run.status.value == "completed"
    assert run.child_runs[0].status.value == "failed"
    with pytest.raises(Exception, match="child broke"):
        parent(False)
    run = Client().list_pipeline_runs(pipeline_name="parent")[0]
    assert run.status.value == "failed"
    assert run.child_runs[0].status.value == "failed"


def test_max_depth_budget_limits_nesting() -> None:
    @pipeline(dynamic=True)
    def leaf():
        produce_number()

    @pipeline(dynamic=True)
    def middle():
        leaf()

    @pipeline(dynamic=True, budget=Budget(max_depth=1))
    def top():
        middle()

    with pytest.raises(BudgetExceeded, match="max_depth=1"):
        top()


def test_a_step_fed_by_a_child_runs_output_records_a_cross_run_upstream() -> None:
    from typer.testing import CliRunner

    from unspool._cli import app

    @step
    def consume_number(value: int) -> int:
        return value + 1

    @pipeline(dynamic=True)
    def child_pipeline():
        return produce_number()

    @pipeline(dynamic=True)
    def parent_pipeline():
        local = produce_number()  # a step of the parent with the same invocation id as the child's
        consume_number(child_pipeline())
        consume_number(local)

    run = parent_pipeline()
    assert run.steps["consume_number"].upstream == ["pipeline:child_pipeline/produce_number"]
    assert run.steps["consume_number_2"].upstream == ["produce_number"]
    result = CliRunner().invoke(app, ["runs", "dag", run.id, "--format", "text"])
    assert result.exit_code == 0, result.output
    edges = set(result.output.split("\n"))
    assert "pipeline:child_pipeline/produce_number -> consume_number" in edges
    assert "produce_number -> consume_number_2" in edges
    assert "produce_number -> consume_number" not in edges
