"""One behaviour, every executor: the same pipelines run inline (threads of the orchestrator),
isolated (a worker process per step, ``orchestrator: {type: process}``) and on Ray
(``{type: ray, all_steps: true}``), and must give the same recorded results.

Where a step runs is the executor's business; what a run records (outputs, lineage,
statuses, attempts, logs, metadata, cache hits) is not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Annotated, Any

import pytest

from unspool import (
    ArtifactConfig,
    Client,
    StepFailedError,
    StepRetryConfig,
    get_step_context,
    log_metadata,
    pipeline,
    step,
)

pytestmark = pytest.mark.timeout(180)

ORCHESTRATORS = {
    "inline": {},
    "isolated": {"type": "process"},
    "ray": {"type": "ray", "all_steps": True},
}


@pytest.fixture(scope="module")
def _ray_for_module() -> Iterator[Any]:
    from _ray_support import local_ray_cluster

    yield from local_ray_cluster(num_cpus=2)


@pytest.fixture(params=list(ORCHESTRATORS))
def orchestrator(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "ray":
        request.getfixturevalue("_ray_for_module")
    return ORCHESTRATORS[request.param]


def _last_run():
    return Client().list_pipeline_runs()[0]


@step
def make(n: int) -> list[int]:
    return list(range(n))


@step
def square(x: int) -> int:
    return x * x


@step
def add(values: list[int]) -> int:
    return sum(values)


def test_a_chain_and_a_fan_out_give_the_same_results_and_lineage(orchestrator: dict) -> None:
    @pipeline(dynamic=True, orchestrator=orchestrator)
    def p() -> int:
        return add(square.map(make(5))).load()

    run = p()
    assert run.status.value == "completed"
    assert run.steps["add"].output.load() == 30
    assert [s.status.value for s in run.steps.values()] == ["completed"] * 7
    inputs = run.steps["add"].inputs["values"]
    assert [a.producer_step_run.invocation_id for a in inputs] == ["square", *[f"square_{i}" for i in range(2, 6)]]
    if orchestrator:
        assert run.config["orchestrator"]["type"] == orchestrator["type"]


def test_several_named_outputs_and_metadata_come_back(orchestrator: dict) -> None:
    @step
    def split(x: int) -> tuple[Annotated[int, ArtifactConfig(name="low")], Annotated[int, ArtifactConfig(name="high")]]:
        log_metadata({"pid": os.getpid(), "attempt": get_step_context().attempt})
        log_metadata({"spread": x}, artifact_name="high")
        return x - 1, x + 1

    @pipeline(dynamic=True, orchestrator=orchestrator)
    def p() -> None:
        split(10)

    step_run = p().steps["split"]
    outputs = step_run.outputs
    assert {name: versions[0].load() for name, versions in outputs.items()} == {"low": 9, "high": 11}
    assert step_run.metadata["attempt"] == 1
    assert outputs["high"][0].metadata["spread"] == 10
    in_driver = step_run.metadata["pid"] == os.getpid()
    assert in_driver == (not orchestrator)


def test_failures_carry_the_error_and_skip_dependants(orchestrator: dict) -> None:
    @step(enable_cache=False)
    def broken(x: int) -> int:
        raise KeyError(f"missing {x}")

    caught: dict[str, StepFailedError] = {}

    @pipeline(dynamic=True, orchestrator=orchestrator)
    def p() -> None:
        try:
            square(broken(3))
        except StepFailedError as exc:
            caught["exc"] = exc

    assert p().status.value == "completed"  # the body handled the failure
    assert isinstance(caught["exc"].original_exception, KeyError)
    run = _last_run()
    assert run.steps["broken"].error["type"] == "KeyError"
    assert "missing 3" in run.steps["broken"].error["message"]
    assert "Traceback" in run.steps["broken"].error["traceback"]
    assert "square" not in run.steps or run.steps["square"].status.value == "skipped"


def test_retries_are_recorded_per_attempt(orchestrator: dict) -> None:
    @step(enable_cache=False, retry=StepRetryConfig(max_retries=2))
    def third_time_lucky() -> int:
        attempt = get_step_context().attempt
        print(f"try {attempt}")
        if attempt < 3:
            raise RuntimeError(f"unlucky {attempt}")
        return attempt

    @pipeline(dynamic=True, orchestrator=orchestrator)
    def p() -> None:
        third_time_lucky()

    step_run = p().steps["third_time_lucky"]
    assert step_run.output.load() == 3
    assert [a["status"] for a in step_run.attempts] == ["failed", "failed", "completed"]
    assert step_run.attempts[1]["error"]["message"] == "unlucky 2"
    assert step_run.logs.splitlines() == ["try 1", "--- attempt 2 ---", "try 2", "--- attempt 3 ---", "try 3"]


def test_a_second_run_is_served_from_the_cache(orchestrator: dict) -> None:
    @pipeline(dynamic=True, orchestrator=orchestrator)
    def p() -> int:
        return add(square.map(make(3))).load()

    first, second = p(), p()
    assert {s.status.value for s in first.steps.values()} == {"completed"}
    assert {s.status.value for s in second.steps.values()} == {"cached"}
    assert second.steps["add"].output.load() == 5


def test_prints_and_log_records_are_captured_per_step(orchestrator: dict) -> None:
    @step(enable_cache=False)
    def talk(word: str) -> None:
        print(f"say {word}")
        logging.getLogger("matrix").warning("warn %s", word)

    @pipeline(dynamic=True, orchestrator=orchestrator)
    def p() -> None:
        talk.map(["a", "b"])

    run = p()
    assert run.steps["talk"].logs.splitlines() == ["say a", "WARNING matrix: warn a"]
    assert run.steps["talk_2"].logs.splitlines() == ["say b", "WARNING matrix: warn b"]


def test_hooks_run_where_the_step_runs(orchestrator: dict, tmp_path) -> None:
    marker = tmp_path / "hook"

    def on_failure(exc: BaseException) -> None:
        marker.write_text(f"{type(exc).__name__}:{exc}")

    @step(enable_cache=False, on_failure=on_failure)
    def fails() -> None:
        raise ValueError("hooked")

    @pipeline(dynamic=True, orchestrator=orchestrator)
    def p() -> None:
        fails()

    with pytest.raises(StepFailedError):
        p()
    assert marker.read_text() == "ValueError:hooked"


@step(enable_cache=False)
def counted(x: int, effects: str) -> int:
    with open(effects, "a") as f:
        f.write(get_step_context().invocation_id + "\n")
    if x == 2 and os.path.exists(effects + ".fail"):
        raise RuntimeError("not yet")
    return x + 1


@pipeline(dynamic=True)
def resumable(effects: str) -> None:
    x = counted(0, effects)
    x = counted(x, effects)
    counted(x, effects)


def test_resume_reuses_what_completed_and_runs_the_rest(orchestrator: dict, tmp_path) -> None:
    effects = str(tmp_path / "effects")
    open(effects + ".fail", "w").close()
    with pytest.raises(StepFailedError, match="not yet"):
        resumable.with_options(orchestrator=orchestrator)(effects)
    run = _last_run()
    assert [s.status.value for s in run.steps.values()] == ["completed", "completed", "failed"]

    os.remove(effects + ".fail")
    resumed = Client().resume_pipeline_run(run.id)
    assert resumed.id == run.id
    assert resumed.config["orchestrator"] == run.config["orchestrator"]
    assert [s.status.value for s in resumed.steps.values()] == ["completed"] * 3
    with open(effects) as f:
        assert f.read().split() == ["counted", "counted_2", "counted_3", "counted_3"]
    assert [a["status"] for a in resumed.steps["counted_3"].attempts] == ["failed", "completed"]


def test_fail_fast_stops_what_has_not_started(orchestrator: dict) -> None:
    @step(enable_cache=False)
    def fails() -> int:
        raise ValueError("first failure")

    @pipeline(dynamic=True, orchestrator=orchestrator, execution_mode="FAIL_FAST")
    def p() -> None:
        first = fails.submit()
        first.wait()
        square(2)  # never starts: the body is interrupted here

    with pytest.raises(StepFailedError, match="stopping"):
        p()
    statuses = {k: s.status.value for k, s in _last_run().steps.items()}
    assert statuses == {"fails": "failed", "square": "stopped"}
