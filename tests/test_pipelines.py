"""Pipelines: the reference docs' samples run unchanged, static and dynamic runs are stored truthfully.

The first tests copy code from the ZenML dynamic-pipelines documentation with only the import
line changed (``from zenml import ...`` -> ``from unspool import ...``), run it, and read back
what the stores hold.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Annotated, Any

import pytest

from unspool import (
    ArtifactConfig,
    Client,
    ExecutionStatus,
    PipelineError,
    PipelineRun,
    RunFailedError,
    StepFailedError,
    StepInputError,
    pipeline,
    step,
)


def sql(home: Path, query: str, *args: object) -> list[tuple]:
    Client()  # flushes buffered writes
    with sqlite3.connect(home / "unspool.db") as conn:
        return conn.execute(query, args).fetchall()


# -- the reference docs' samples --------------------------------------------------------------------


def test_reference_basic_example(home: Path) -> None:
    @step
    def generate_int() -> int:
        return 3

    @step
    def do_something(index: int) -> None:
        print(f"Processing index {index}")

    @pipeline(dynamic=True)
    def dynamic_pipeline() -> None:
        count = generate_int()
        # `count` is an artifact, we now load the data
        count_data = count.load()

        for idx in range(count_data):
            # This will run sequentially, like regular Python code would.
            do_something(idx)

    run = dynamic_pipeline()

    assert isinstance(run, PipelineRun)
    assert run.status == ExecutionStatus.COMPLETED
    assert run.dynamic is True
    assert list(run.steps) == ["generate_int", "do_something", "do_something_2", "do_something_3"]
    assert all(s.status == ExecutionStatus.COMPLETED for s in run.steps.values())
    assert [run.steps[i].parameters for i in ("do_something", "do_something_2", "do_something_3")] == [
        {"index": 0},
        {"index": 1},
        {"index": 2},
    ]
    assert run.steps["generate_int"].output.load() == 3
    assert run.steps["do_something_3"].logs.strip() == "Processing index 2"
    assert run.steps["do_something"].outputs == {}  # annotated -> None: no artifact
    # The stores agree: one run row, four step rows, one artifact version.
    assert sql(home, "SELECT status, dynamic FROM pipeline_runs") == [("completed", 1)]
    assert sql(home, "SELECT count(*) FROM step_runs WHERE run_id = ?", run.id) == [(4,)]
    assert sql(home, "SELECT name, version FROM artifact_versions") == [
        ("dynamic_pipeline::generate_int::output", 1)
    ]


def test_reference_dynamic_step_configuration_with_options(home: Path) -> None:
    calls: list[str] = []

    @step
    def some_step() -> None:
        calls.append("ran")

    @pipeline(dynamic=True)
    def dynamic_pipeline():
        some_step.with_options(enable_cache=False)()

    first = dynamic_pipeline()
    second = dynamic_pipeline()

    # enable_cache=False from with_options: the second run executes the step again.
    assert calls == ["ran", "ran"]
    for run in (first, second):
        step_run = run.steps["some_step"]
        assert step_run.status == ExecutionStatus.COMPLETED
        assert step_run.config["enable_cache"] is False
        assert step_run.original_step_run_id is None
    assert some_step.config.enable_cache is None  # the decorated step itself is unchanged


def test_reference_artifact_name_substitutions() -> None:
    @step(substitutions={"suffix": "validated"})
    def produce() -> Annotated[int, ArtifactConfig(name="score_{suffix}")]:
        return 1

    @step
    def consume(score: int) -> None:
        print(score)

    @pipeline(dynamic=True)
    def dynamic_pipeline() -> None:
        score = produce()
        consume(score)

    run = dynamic_pipeline()

    assert run.status == ExecutionStatus.COMPLETED
    version = Client().get_artifact_version("score_validated")
    assert version.version == 1 and version.load() == 1
    # The output keeps its declared name; the artifact gets the substituted one.
    assert run.steps["produce"].outputs["score_{suffix}"][0].id == version.id
    # The substituted artifact is a real output passed downstream.
    assert run.steps["consume"].inputs["score"][0].id == version.id
    assert run.steps["consume"].logs.strip() == "1"


def test_reference_step_runtime_configuration() -> None:
    @step(runtime="isolated")
    def some_step() -> None:
        # This step will run in its own isolated environment
        ...

    @step(runtime="inline")
    def another_step() -> None:
        # This step will run in the orchestration environment
        ...

    @pipeline(dynamic=True)
    def runtimes() -> None:
        some_step()
        another_step()
        some_step.submit().result()

    run = runtimes()

    assert run.status == ExecutionStatus.COMPLETED
    # Isolated steps may run inline for now, but what was requested is recorded.
    assert run.steps["some_step"].config["runtime"] == "isolated"
    assert run.steps["some_step"].runtime == "isolated"
    assert run.steps["some_step_2"].config["runtime"] == "isolated"
    assert run.steps["another_step"].config["runtime"] == "inline"


def test_reference_parallel_step_execution(home: Path) -> None:
    seen: dict[str, object] = {}

    @step
    def some_step(arg: int) -> int:
        return arg * 2

    @step
    def downstream_step(value: int) -> None:
        print(f"got {value}")

    @pipeline(dynamic=True)
    def dynamic_pipeline():
        # Submit a step for parallel execution
        future = some_step.submit(arg=1)

        # Wait and get artifact response(s)
        artifact = future.result()

        # Wait and load artifact data
        data = future.load()

        # Pass the output to another step
        downstream_step(future)

        # Run multiple steps in parallel
        for idx in range(3):
            some_step.submit(arg=idx)

        seen["artifact_loaded"] = artifact.load()
        seen["data"] = data

    run = dynamic_pipeline()

    assert seen == {"artifact_loaded": 2, "data": 2}
    assert run.status == ExecutionStatus.COMPLETED
    assert list(run.steps) == ["some_step", "downstream_step", "some_step_2", "some_step_3", "some_step_4"]
    assert [run.steps[f"some_step{s}"].output.load() for s in ("", "_2", "_3", "_4")] == [2, 0, 2, 4]
    # The future passed to downstream_step is an input edge to some_step's output.
    downstream = run.steps["downstream_step"]
    assert downstream.inputs["value"][0].id == run.steps["some_step"].output.id
    assert downstream.upstream == ["some_step"]
    assert downstream.logs.strip() == "got 2"
    # Submitted steps that the body never waited for still finished before the run did;
    # some_step(arg=1) a second time is a cache hit of the first call.
    assert sql(home, "SELECT invocation_id, status FROM step_runs ORDER BY position") == [
        ("some_step", "completed"),
        ("downstream_step", "completed"),
        ("some_step_2", "completed"),
        ("some_step_3", "cached"),
        ("some_step_4", "completed"),
    ]
    assert run.steps["some_step_3"].original_step_run_id == run.steps["some_step"].id


def test_static_pipeline_compiles_a_dag_then_runs_it() -> None:
    @step
    def load_data() -> dict:
        return {"features": [1, 2, 3], "labels": [0, 1, 0]}

    @step
    def train_model(data: dict) -> None:
        print(f"training on {len(data['features'])} rows")

    @pipeline
    def simple_ml_pipeline():
        dataset = load_data()
        train_model(dataset)

    run = simple_ml_pipeline()

    assert run.status == ExecutionStatus.COMPLETED
    assert run.dynamic is False
    assert run.config["dynamic"] is False
    assert run.dag == {
        "nodes": [{"id": "load_data", "step": "load_data"}, {"id": "train_model", "step": "train_model"}],
        "edges": [["load_data", "train_model"]],
    }
    assert run.steps["train_model"].logs.strip() == "training on 3 rows"
    assert run.steps["train_model"].inputs["data"][0].load() == {"features": [1, 2, 3], "labels": [0, 1, 0]}


# -- @pipeline options and parameters ----------------------------------------------------------------


def test_pipeline_options_are_recorded_on_the_run(home: Path) -> None:
    @step
    def s() -> int:
        return 1

    @pipeline(
        name="custom_name",
        dynamic=True,
        enable_cache=False,
        settings={"resources": {"cpu_count": 2}},
        substitutions={"team": "ml"},
    )
    def my_pipeline() -> None:
        s()

    run = my_pipeline()
    again = my_pipeline()

    assert again.steps["s"].status == ExecutionStatus.COMPLETED  # enable_cache=False on the pipeline
    assert run.pipeline_name == "custom_name"
    assert run.name.startswith("custom_name-")
    assert run.config["dynamic"] is True
    assert run.config["enable_cache"] is False
    assert run.config["settings"] == {"resources": {"cpu_count": 2}}
    assert run.config["substitutions"] == {"team": "ml"}
    [(config,)] = sql(home, "SELECT config FROM pipeline_runs WHERE id = ?", run.id)
    assert json.loads(config)["settings"] == {"resources": {"cpu_count": 2}}
    assert sql(home, "SELECT name FROM pipelines") == [("custom_name",)]


@pytest.mark.parametrize("dynamic", [False, True])
def test_pipeline_parameters_come_from_the_function_arguments(dynamic: bool) -> None:
    @step
    def scale(x: int, factor: float) -> float:
        return x * factor

    @pipeline(dynamic=dynamic)
    def parametrised(x: int, factor: float = 2.0, label: str = "a") -> None:
        scale(x, factor)

    run = parametrised(3, label="b")

    assert run.parameters == {"x": 3, "factor": 2.0, "label": "b"}
    assert run.steps["scale"].parameters == {"x": 3, "factor": 2.0}
    assert run.steps["scale"].output.load() == 6.0
    assert Client().get_pipeline_run(run.id).parameters == {"x": 3, "factor": 2.0, "label": "b"}


def test_bare_and_called_pipeline_decorators() -> None:
    @step
    def one() -> int:
        return 1

    @pipeline
    def bare() -> None:
        one()

    @pipeline()
    def called() -> None:
        one()

    assert bare().config["dynamic"] is False and bare.name == "bare"
    assert called().status == ExecutionStatus.COMPLETED and called.name == "called"
    assert bare.__name__ == "bare"
    with pytest.raises(Exception, match="unknown option"):
        pipeline(dynamc=True)(lambda: None)


def test_wrong_pipeline_arguments_are_a_clear_error() -> None:
    @pipeline
    def needs_x(x: int) -> None: ...

    with pytest.raises(StepInputError, match=r"needs_x.*signature is needs_x\(x: .*int"):
        needs_x(1, 2)
    with pytest.raises(StepInputError, match="JSON"):
        needs_x(object())


# -- static pipelines -------------------------------------------------------------------------------


def test_static_load_at_compile_time_is_a_pipeline_error() -> None:
    @step
    def make() -> int:
        return 1

    @step
    def use(x: int) -> None: ...

    @pipeline
    def static_loading() -> None:
        value = make()
        if value.load() > 0:
            use(value)

    with pytest.raises(PipelineError, match=r"compil.*dynamic=True"):
        static_loading()
    [run] = Client().list_pipeline_runs(pipeline_name="static_loading")
    assert run.status == ExecutionStatus.FAILED
    assert run.error["type"] == "PipelineError"
    assert run.steps == {} or all(s.status != ExecutionStatus.COMPLETED for s in run.steps.values())


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "wait",
    [
        lambda f: f.result(),
        lambda f: f.load(),
        lambda f: f.wait(),
        lambda f: f.step_run,
        lambda f: f.result().load(),
        lambda f: f._single().id,
    ],
    ids=["result", "load", "wait", "step_run", "artifact-load", "artifact-id"],
)
def test_static_waiting_on_a_future_at_compile_time_is_an_error_not_a_hang(wait: Any) -> None:
    @step
    def make() -> int:
        return 1

    @pipeline
    def static_waiting() -> None:
        wait(make.submit())

    with pytest.raises(PipelineError, match=r"compiling static pipeline 'static_waiting'.*dynamic=True"):
        static_waiting()
    [run] = Client().list_pipeline_runs()
    assert run.status == ExecutionStatus.FAILED
    assert all(s.status != ExecutionStatus.COMPLETED for s in run.steps.values())


def test_static_independent_steps_run_in_parallel() -> None:
    # Each branch waits at the barrier until the other one arrives: if the engine ran them one
    # after the other, the barrier would time out and the steps would fail.
    barrier = threading.Barrier(3, timeout=60)

    @step(enable_cache=False)
    def branch(i: int) -> int:
        barrier.wait()
        return i

    @step
    def join(values: list[int]) -> int:
        return sum(values)

    @pipeline
    def fan_in() -> None:
        join([branch(i) for i in range(3)])

    run = fan_in()

    assert run.status == ExecutionStatus.COMPLETED, run.error
    assert run.steps["join"].output.load() == 3
    assert sorted(run.dag["edges"]) == [["branch", "join"], ["branch_2", "join"], ["branch_3", "join"]]
    branches = [run.steps[i] for i in ("branch", "branch_2", "branch_3")]
    # All three were running at once: each started before any of them ended.
    assert max(b.start_time for b in branches) <= min(b.end_time for b in branches)
    assert run.steps["join"].start_time >= max(b.end_time for b in branches)


def test_static_failed_step_skips_dependants_and_fails_the_run() -> None:
    @step
    def boom() -> int:
        raise ValueError("bad input")

    @step
    def after(x: int) -> None: ...

    @step
    def independent() -> int:
        return 1

    @pipeline
    def static_failure() -> None:
        after(boom())
        independent()

    with pytest.raises(RunFailedError, match="boom"):
        static_failure()

    [run] = Client().list_pipeline_runs(pipeline_name="static_failure")
    assert run.status == ExecutionStatus.FAILED
    assert run.error["failed_steps"] == ["boom"]
    assert run.failed_steps == ["boom"]
    assert run.steps["boom"].status == ExecutionStatus.FAILED
    assert run.steps["boom"].error["type"] == "ValueError"
    assert run.steps["boom"].error["message"] == "bad input"
    assert 'raise ValueError("bad input")' in run.steps["boom"].error["traceback"]
    assert run.steps["after"].status == ExecutionStatus.SKIPPED
    assert run.steps["independent"].status == ExecutionStatus.COMPLETED
    assert run.end_time is not None and run.end_time >= run.start_time


# -- dynamic pipelines ------------------------------------------------------------------------------


def test_dynamic_sync_call_returns_artifacts_with_load() -> None:
    seen: dict[str, object] = {}

    @step
    def pair() -> tuple[int, str]:
        return 7, "seven"

    @step
    def single() -> Annotated[list, "numbers"]:
        return [1, 2]

    @pipeline(dynamic=True)
    def sync_calls() -> None:
        number, word = pair()
        numbers = single()
        seen["values"] = (number.load(), word.load(), numbers.load())
        seen["names"] = (number.name, word.name, numbers.name)
        seen["versions"] = (number.version, numbers.version)

    run = sync_calls()

    assert seen["values"] == (7, "seven", [1, 2])
    assert seen["names"] == ("sync_calls::pair::output_0", "sync_calls::pair::output_1", "numbers")
    assert seen["versions"] == (1, 1)
    assert run.status == ExecutionStatus.COMPLETED


def test_dynamic_body_can_catch_a_step_failure_and_continue() -> None:
    caught: list[StepFailedError] = []

    @step
    def flaky() -> int:
        raise RuntimeError("transient outage")

    @step
    def fallback() -> int:
        return 0

    @pipeline(dynamic=True)
    def resilient() -> None:
        try:
            flaky()
        except StepFailedError as exc:
            caught.append(exc)
            fallback()

    resilient()  # the body handled the failure: the run completes

    [exc] = caught
    assert exc.invocation_id == "flaky"
    assert isinstance(exc.original_exception, RuntimeError)
    assert exc.error["type"] == "RuntimeError"
    assert exc.step_run.status == ExecutionStatus.FAILED
    [run] = Client().list_pipeline_runs(pipeline_name="resilient")
    # The body went on after the failure; the run records the failed step, and completed.
    assert run.status == ExecutionStatus.COMPLETED
    assert run.failed_steps == ["flaky"]
    assert run.steps["fallback"].status == ExecutionStatus.COMPLETED
    assert run.steps["flaky"].status == ExecutionStatus.FAILED
    assert run.error is None and run.metadata["handled_failures"] == ["flaky"]


def test_uncaught_step_failure_in_a_dynamic_body_fails_the_run_and_is_raised() -> None:
    @step
    def broken(x: int) -> int:
        raise KeyError(f"missing {x}")

    @pipeline(dynamic=True)
    def fragile() -> None:
        broken(5)

    with pytest.raises(StepFailedError, match="broken") as info:
        fragile()

    run = Client().get_pipeline_run(info.value.run_id)
    assert run.status == ExecutionStatus.FAILED
    assert run.error["type"] == "StepFailedError"
    assert run.error["failed_steps"] == ["broken"]
    assert run.steps["broken"].error["type"] == "KeyError"
    assert "missing 5" in run.steps["broken"].error["message"]


def test_body_exception_fails_the_run_with_its_traceback() -> None:
    @pipeline(dynamic=True)
    def crashing() -> None:
        raise ZeroDivisionError("body bug")

    with pytest.raises(ZeroDivisionError):
        crashing()
    [run] = Client().list_pipeline_runs(pipeline_name="crashing")
    assert run.status == ExecutionStatus.FAILED
    assert run.error["type"] == "ZeroDivisionError"
    assert run.error["failed_steps"] == []
    assert "body bug" in run.error["traceback"]


def test_run_names_are_unique_and_timestamped() -> None:
    @pipeline(dynamic=True)
    def tiny() -> None: ...

    first, second = tiny(), tiny()
    assert first.name != second.name
    assert re.fullmatch(r"tiny-\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}_\d{6}", first.name)


def test_ctrl_c_in_a_sync_step_stops_the_body_instead_of_being_caught_as_a_step_failure() -> None:
    after: list[str] = []

    @step
    def interrupted() -> int:
        raise KeyboardInterrupt

    @step
    def later() -> None:
        after.append("ran")

    @pipeline(dynamic=True)
    def careful() -> None:
        for _ in range(3):
            try:
                interrupted()
            except StepFailedError:  # must not swallow Ctrl-C
                later()

    with pytest.raises(KeyboardInterrupt):
        careful()
    assert after == []
    [run] = Client().list_pipeline_runs()
    assert run.status in (ExecutionStatus.STOPPED, ExecutionStatus.FAILED)
    assert run.error["type"] == "KeyboardInterrupt"
    assert list(run.steps) == ["interrupted"]
    assert run.steps["interrupted"].error["type"] == "KeyboardInterrupt"
