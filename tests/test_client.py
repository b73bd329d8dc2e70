"""The Client: reading runs, step runs and artifact versions back, and the public API surface."""

from __future__ import annotations

import datetime as dt
import enum
import sqlite3
from pathlib import Path
from typing import Annotated

import pytest

import unspool
from unspool import (
    ArtifactVersion,
    Client,
    ExecutionStatus,
    NotFoundError,
    PipelineRun,
    StepRun,
    get_step_context,
    pipeline,
    step,
)
from unspool._events import events


@step
def make(x: int) -> Annotated[int, "made"]:
    print(f"making {x}")
    return x


@step
def double(value: int) -> int:
    return value * 2


@step
def both(value: int) -> tuple[int, int]:
    return value, -value


@step
def fail(value: int) -> int:
    raise ValueError(f"cannot handle {value}")


@pipeline(dynamic=True)
def inspected(x: int = 1) -> None:
    value = make(x)
    double(value)
    both(value)


@pipeline(dynamic=True)
def failing() -> None:
    fail(make(0))


# -- runs -------------------------------------------------------------------------------------------


def test_pipeline_run_fields() -> None:
    before = dt.datetime.now()
    returned = inspected(3)
    after = dt.datetime.now()

    for run in (returned, Client().get_pipeline_run(returned.id)):
        assert isinstance(run, PipelineRun)
        assert len(run.id) == 32
        assert run.name.startswith("inspected-")
        assert run.pipeline_name == "inspected"
        assert run.status is ExecutionStatus.COMPLETED
        assert list(run.steps) == ["make", "double", "both"]  # ordered by invocation
        assert all(isinstance(s, StepRun) for s in run.steps.values())
        assert before - dt.timedelta(seconds=1) <= run.start_time <= run.end_time <= after + dt.timedelta(seconds=1)
        assert run.parameters == {"x": 3}
        assert run.config["dynamic"] is True and run.config["enable_cache"] is True
        assert run.error is None


def test_get_pipeline_run_by_id_name_or_id_prefix() -> None:
    run = inspected()
    client = Client()
    assert client.get_pipeline_run(run.id).id == run.id
    assert client.get_pipeline_run(run.name).id == run.id
    assert client.get_pipeline_run(run.id[:8]).id == run.id
    with pytest.raises(NotFoundError, match="no pipeline run with id or name 'nope'"):
        client.get_pipeline_run("nope")
    with pytest.raises(KeyError):  # NotFoundError is a KeyError too
        client.get_pipeline_run("nope")


def test_list_pipeline_runs_filters_by_pipeline_and_status_newest_first() -> None:
    first = inspected(1)
    with pytest.raises(Exception, match="cannot handle 0"):
        failing()
    second = inspected(2)

    client = Client()
    assert [r.id for r in client.list_pipeline_runs(pipeline_name="inspected")] == [second.id, first.id]
    [failed] = client.list_pipeline_runs(status="failed")
    assert failed.pipeline_name == "failing"
    assert client.list_pipeline_runs(status=ExecutionStatus.FAILED)[0].id == failed.id
    assert len(client.list_pipeline_runs()) == 3
    assert client.list_pipeline_runs(pipeline_name="inspected", status="failed") == []
    assert client.list_pipeline_runs(pipeline_name="unknown") == []


def test_failed_run_says_which_step_failed_and_why() -> None:
    with pytest.raises(Exception, match="cannot handle 0"):
        failing()
    [run] = Client().list_pipeline_runs()

    assert run.status is ExecutionStatus.FAILED
    assert run.error["failed_steps"] == ["fail"]
    assert "fail" in run.error["message"]
    step_run = run.steps["fail"]
    assert step_run.status is ExecutionStatus.FAILED
    assert step_run.error["type"] == "ValueError"
    assert step_run.error["message"] == "cannot handle 0"
    assert "Traceback" in step_run.error["traceback"]
    assert 'raise ValueError(f"cannot handle {value}")' in step_run.error["traceback"]
    assert step_run.start_time <= step_run.end_time
    assert step_run.outputs == {}
    assert run.steps["make"].status is ExecutionStatus.COMPLETED


# -- step runs -----------------------------------------------------------------------------------------


def test_step_run_fields() -> None:
    run = inspected(4)
    make_run, double_run, both_run = run.steps.values()

    assert len(make_run.id) == 32
    assert make_run.name == "make" and make_run.invocation_id == "make"
    assert make_run.run_id == run.id
    assert make_run.status is ExecutionStatus.COMPLETED
    assert make_run.parameters == {"x": 4}
    assert make_run.inputs == {}
    assert list(make_run.outputs) == ["made"]
    assert make_run.output.name == "made" and make_run.output.load() == 4
    assert make_run.logs == "making 4\n"
    assert len(make_run.cache_key) == 64
    assert make_run.original_step_run_id is None
    assert make_run.error is None
    assert make_run.start_time <= make_run.end_time and make_run.duration >= 0

    assert double_run.parameters == {}
    assert double_run.inputs["value"][0].id == make_run.output.id
    assert double_run.output.load() == 8
    assert Client().get_step_run(double_run.id).invocation_id == "double"

    assert list(both_run.outputs) == ["output_0", "output_1"]
    with pytest.raises(ValueError, match=r"'both' has 2 outputs \(output_0, output_1\)"):
        both_run.output  # noqa: B018
    with pytest.raises(NotFoundError):
        Client().get_step_run("0" * 32)


def test_store_is_truthful_while_a_step_runs() -> None:
    seen: dict[str, str] = {}

    @step
    def look() -> None:
        ctx = get_step_context()
        client = Client()
        seen["step"] = client.get_step_run(ctx.step_run_id).status.value
        seen["run"] = client.get_pipeline_run(ctx.run_id).status.value
        seen["end"] = repr(client.get_step_run(ctx.step_run_id).end_time)

    @pipeline(dynamic=True)
    def watched() -> None:
        look()

    run = watched()
    assert seen == {"step": "running", "run": "running", "end": "None"}
    assert run.steps["look"].status is ExecutionStatus.COMPLETED
    assert run.status is ExecutionStatus.COMPLETED


def test_status_events_go_from_initializing_through_running_to_one_final_state() -> None:
    seen: list[tuple[str, str, str | None, str]] = []
    unsubscribe = events.subscribe(lambda e: seen.append((e.kind, e.run_id, e.invocation_id, e.status.value)))
    try:
        first = inspected(5)
        second = inspected(5)  # all cached
        with pytest.raises(Exception, match="cannot handle"):
            failing()
    finally:
        unsubscribe()
    third = Client().list_pipeline_runs(pipeline_name="failing")[0]

    def statuses(kind: str, run_id: str, inv: str | None = None) -> list[str]:
        return [s for k, r, i, s in seen if k == kind and r == run_id and (inv is None or i == inv)]

    assert statuses("run", first.id) == ["initializing", "running", "completed"]
    assert statuses("run", second.id) == ["initializing", "running", "completed"]
    assert statuses("run", third.id) == ["initializing", "running", "failed"]
    for inv in ("make", "double", "both"):
        assert statuses("step", first.id, inv) == ["initializing", "running", "completed"]
        assert statuses("step", second.id, inv) == ["initializing", "cached"]
    assert statuses("step", third.id, "fail") == ["initializing", "running", "failed"]


def test_a_static_run_is_initializing_while_its_body_compiles() -> None:
    seen: list[str] = []

    @pipeline
    def compiled() -> None:
        seen.append(Client().list_pipeline_runs()[0].status.value)
        make(1)

    run = compiled()
    assert seen == ["initializing"]
    assert run.status is ExecutionStatus.COMPLETED


# -- artifact versions --------------------------------------------------------------------------------


def test_get_and_list_artifact_versions() -> None:
    inspected(1)
    inspected(2)
    client = Client()

    latest = client.get_artifact_version("made")
    assert isinstance(latest, ArtifactVersion)
    assert (latest.version, latest.load()) == (2, 2)
    assert client.get_artifact_version("made", version=1).load() == 1
    assert client.get_artifact_version("made", version="1").version == 1
    assert client.get_artifact_version(latest.id).id == latest.id  # by id as well
    with pytest.raises(NotFoundError, match="no version 3 of artifact named 'made'"):
        client.get_artifact_version("made", version=3)
    with pytest.raises(NotFoundError, match="no artifact named 'missing'"):
        client.get_artifact_version("missing")

    assert [(v.name, v.version) for v in client.list_artifact_versions("made")] == [("made", 2), ("made", 1)]
    every = client.list_artifact_versions()
    assert len(every) == 2 * 4  # made, double's output, both's two outputs; per run
    assert {v.name for v in every} == {
        "made", "inspected::double::output", "inspected::both::output_0", "inspected::both::output_1"
    }
    assert client.list_artifact_versions("nothing") == []


def test_artifact_version_fields(home: Path) -> None:
    run = inspected(6)
    version = Client().get_artifact_version("made")

    assert len(version.id) == 32
    assert version.name == "made" and version.version == 1
    assert Path(version.uri).is_dir()
    assert version.data_type == "builtins:int"
    assert version.materializer == "unspool._materializers:BuiltInMaterializer"
    assert len(version.content_hash) == 64 and version.size == 1
    assert version.producer_step_run_id == run.steps["make"].id
    assert version.producer_step_run.invocation_id == "make"
    assert isinstance(version.created, dt.datetime)
    assert version.tags == [] and version.metadata == {"value": 6}
    assert version.load() == 6
    assert repr(version) == "<ArtifactVersion made:1>"
    with sqlite3.connect(home / "unspool.db") as conn:
        assert conn.execute("SELECT id FROM artifact_versions WHERE name = 'made'").fetchall() == [(version.id,)]


def test_a_fresh_store_is_empty() -> None:
    client = Client()
    assert client.list_pipeline_runs() == []
    assert client.list_artifact_versions() == []


# -- the public surface -----------------------------------------------------------------------------------


def test_execution_status_is_a_string_valued_enum() -> None:
    assert issubclass(ExecutionStatus, str) and issubclass(ExecutionStatus, enum.Enum)
    assert {s.value for s in ExecutionStatus} >= {
        "initializing", "running", "completed", "failed", "cached", "stopped"
    }
    assert ExecutionStatus("completed") is ExecutionStatus.COMPLETED
    assert ExecutionStatus.COMPLETED == "completed"
    assert str(ExecutionStatus.FAILED) == "failed" and f"{ExecutionStatus.CACHED}" == "cached"
    assert ExecutionStatus.CACHED.is_successful and ExecutionStatus.CACHED.is_finished
    assert not ExecutionStatus.RUNNING.is_finished and not ExecutionStatus.FAILED.is_successful


def test_everything_public_is_importable_from_unspool() -> None:
    for name in unspool.__all__:
        assert getattr(unspool, name) is not None, name
    for name in (
        "step", "pipeline", "ArtifactConfig", "Client", "PipelineRun", "StepRun", "ArtifactVersion",
        "ExecutionStatus", "BaseMaterializer", "StepRunFuture", "ArtifactFuture", "unmapped",
        "StepFailedError", "StepInputError", "StepOutputError", "MaterializerError", "PipelineError",
        "RunFailedError", "UnspoolError",
    ):
        assert name in unspool.__all__, name
    with pytest.raises(AttributeError):
        unspool.not_a_thing  # noqa: B018
    errors = [getattr(unspool, n) for n in unspool.__all__ if n.endswith("Error")]
    assert all(issubclass(e, unspool.UnspoolError) for e in errors)


def test_reading_never_writes() -> None:
    """A client reads: creating one and reading runs, steps and artifacts executes no write
    statement (marking dead runs stopped is an explicit call, ``reap_dead_runs``)."""
    from unspool.testing import current_stores

    @step
    def make() -> int:
        return 1

    @pipeline
    def once() -> None:
        make()

    run_id = once().id
    store = current_stores().metadata
    before = store.statements
    client = Client()
    run = client.get_pipeline_run(run_id)
    assert [r.id for r in client.list_pipeline_runs()] == [run_id]
    assert run.steps["make"].output.load() == 1
    assert client.list_artifact_versions() and client.list_snapshots() == []
    assert store.statements == before
    assert client.reap_dead_runs() == []  # nothing died; still nothing written
    assert store.statements == before
