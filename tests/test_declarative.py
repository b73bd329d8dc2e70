"""The declarative API: ``Pipeline(steps=[PythonTask(...), ...]).execute(config=...)``.

Tasks become the steps of a static pipeline run in list order; a task's return values are
named (``returns=[...]``, else the task's name) and passed to later tasks' parameters of
the same name as artifacts (``_declarative.py``).
"""

from __future__ import annotations

import importlib
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from unspool import (
    Client,
    ConfigError,
    ExecutionStatus,
    Pipeline,
    PythonTask,
    RunFailedError,
    StepDefinitionError,
    StepInputError,
    step,
)


def sql(home: Path, query: str, *args: object) -> list[tuple]:
    Client()  # flushes buffered writes
    with sqlite3.connect(home / "unspool.db") as conn:
        return conn.execute(query, args).fetchall()


def step1() -> list[int]:
    return [3, 1, 2]


def step2(process: list[int]) -> int:
    print(f"analyzing {process}")
    return sum(process)


def test_quick_start_shape_runs_and_is_recorded(home: Path) -> None:
    pipe = Pipeline(steps=[
        PythonTask(function=step1, name="process"),
        PythonTask(function=step2, name="analyze"),
    ])
    run = pipe.execute()

    assert run.status == ExecutionStatus.COMPLETED
    assert run.pipeline_name == "process_analyze"  # default name: the task names
    assert run.dynamic is False
    assert list(run.steps) == ["process", "analyze"]
    assert run.dag == {
        "nodes": [{"id": "process", "step": "process"}, {"id": "analyze", "step": "analyze"}],
        "edges": [["process", "analyze"]],
    }
    produced = run.steps["process"].outputs["process"][0]
    assert produced.name == "process_analyze::process::process"
    assert produced.load() == [3, 1, 2]
    consumed = run.steps["analyze"].inputs["process"][0]
    assert consumed.id == produced.id  # lineage: analyze read what process wrote
    assert run.steps["analyze"].output.load() == 6
    assert "analyzing [3, 1, 2]" in run.steps["analyze"].logs
    assert sql(home, "SELECT step_name, status FROM step_runs WHERE run_id = ? ORDER BY position", run.id) == [
        ("process", "completed"), ("analyze", "completed"),
    ]

    again = pipe.execute()
    assert [s.status for s in again.steps.values()] == [ExecutionStatus.CACHED] * 2


def test_named_values_from_tuples_and_dicts() -> None:
    def split(text: str) -> tuple[str, int]:
        return text.upper(), len(text)

    def describe(text: str) -> dict[str, object]:
        return {"words": text.split(), "first": text[0]}

    def report(upper: str, length: int, words: list[str], first: str) -> str:
        return f"{upper}/{length}/{len(words)}/{first}"

    pipe = Pipeline(
        name="named_values",
        steps=[
            PythonTask(function=split, name="split", returns=["upper", "length"]),
            PythonTask(function=describe, name="describe", returns=["words", "first"]),
            PythonTask(function=report, name="report", returns=["summary"]),
        ],
    )
    assert pipe.signature.parameters["text"].kind.name == "KEYWORD_ONLY"
    run = pipe.execute(text="hello big world")

    assert run.parameters == {"text": "hello big world"}
    assert set(run.steps["split"].outputs) == {"upper", "length"}
    assert run.steps["split"].parameters == {"text": "hello big world"}
    assert run.steps["report"].outputs["summary"][0].load() == "HELLO BIG WORLD/15/3/h"
    inputs = run.steps["report"].inputs
    assert inputs["upper"][0].id == run.steps["split"].outputs["upper"][0].id
    assert inputs["words"][0].id == run.steps["describe"].outputs["words"][0].id
    assert ["split", "report"] in run.dag["edges"] and ["describe", "report"] in run.dag["edges"]


def test_tasks_run_in_list_order_even_without_data_between_them() -> None:
    marks: list[tuple[str, float, float]] = []

    def slow() -> None:
        start = time.monotonic()
        time.sleep(0.3)
        marks.append(("slow", start, time.monotonic()))

    def fast() -> None:
        start = time.monotonic()
        marks.append(("fast", start, time.monotonic()))

    pipe = Pipeline(name="ordered", steps=[PythonTask(slow), PythonTask(fast)])
    run = pipe.with_options(enable_cache=False).execute()
    assert run.dag["edges"] == [["slow", "fast"]]  # the ordering edge
    assert [m[0] for m in marks] == ["slow", "fast"]
    assert marks[1][1] >= marks[0][2]
    assert run.steps["fast"].start_time >= run.steps["slow"].end_time


def test_a_failed_task_skips_the_later_ones() -> None:
    def first() -> int:
        raise ValueError("bad input")

    def second(first: int) -> int:
        return first

    def third() -> None:
        pass

    pipe = Pipeline(name="failing_tasks", steps=[PythonTask(first), PythonTask(second), PythonTask(third)])
    with pytest.raises(RunFailedError):
        pipe.execute()
    [run] = Client().list_pipeline_runs("failing_tasks")
    assert run.status == ExecutionStatus.FAILED
    assert [s.status.value for s in run.steps.values()] == ["failed", "skipped", "skipped"]


def test_dict_with_other_keys_than_returns_is_a_clear_step_error() -> None:
    def make() -> dict[str, int]:
        return {"a": 1, "c": 3}

    pipe = Pipeline(name="bad_dict", steps=[PythonTask(make, returns=["a", "b"])])
    with pytest.raises(RunFailedError):
        pipe.execute()
    [run] = Client().list_pipeline_runs("bad_dict")
    error = run.steps["make"].error
    assert error["type"] == "StepOutputError"
    assert "task 'make' returned a dict with keys ['a', 'c'] but declares returns=['a', 'b']" in error["message"]


def test_pipeline_parameters_come_from_execute_and_the_config_file(tmp_path: Path) -> None:
    def load(limit: int, offset: int = 0) -> list[int]:
        return list(range(offset, offset + limit))

    def total(load: list[int], scale: int = 1) -> int:
        return sum(load) * scale

    pipe = Pipeline(name="params", steps=[PythonTask(load), PythonTask(total)])
    assert str(pipe.signature) == "(*, limit: int, offset: int = 0, scale: int = 1)"

    run = pipe.execute(limit=3)
    assert run.parameters == {"limit": 3, "offset": 0, "scale": 1}
    assert run.steps["total"].output.load() == 3

    config = tmp_path / "params.yaml"
    config.write_text("parameters: {limit: 4, scale: 10}\nsteps:\n  load:\n    enable_cache: false\n")
    run = pipe.execute(config=str(config), scale=2)  # execute's parameters win over the file's
    assert run.parameters == {"limit": 4, "offset": 0, "scale": 2}
    assert run.steps["total"].output.load() == 12
    assert run.steps["load"].config["enable_cache"] is False
    assert run.config["config_path"] == str(config.resolve())

    with pytest.raises(StepInputError, match="missing a required argument: 'limit'"):
        pipe.execute()
    with pytest.raises(StepInputError, match="unexpected keyword argument 'limt'"):
        pipe.execute(limit=1, limt=2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: {limt: 1}\n")
    with pytest.raises(ConfigError, match=r"parameters\.limt: pipeline 'params' has no parameter 'limt'; expected one of: limit, offset, scale"):
        pipe.execute(config=str(bad))


def test_config_file_steps_are_task_names_and_orchestrator_applies(tmp_path: Path) -> None:
    calls: list[str] = []

    def fetch() -> str:
        calls.append("fetch")
        return "data"

    def use(fetch: str) -> str:
        return fetch * 2

    pipe = Pipeline(name="configured_tasks", steps=[PythonTask(fetch), PythonTask(use)])
    config = tmp_path / "run.yaml"
    config.write_text(
        "orchestrator: {type: local}\nsteps:\n  fetch:\n    enable_cache: false\n    settings: {k: v}\n"
    )
    pipe.execute(config=str(config))
    run = pipe.execute(config=str(config))
    assert calls == ["fetch", "fetch"]  # not cached: configured off for this task
    assert run.steps["use"].status == ExecutionStatus.CACHED  # same input content as before
    assert run.steps["fetch"].config["settings"] == {"k": "v"}
    assert run.config["orchestrator"] == {"type": "local", "enable_parallel": False}

    typo = tmp_path / "typo.yaml"
    typo.write_text("steps:\n  fetsh: {enable_cache: false}\n")
    with pytest.raises(ConfigError) as info:
        pipe.execute(config=str(typo))
    assert str(info.value) == (
        f"config file {typo.resolve()}: steps.fetsh: pipeline 'configured_tasks' has no step named "
        "'fetsh'; expected one of: fetch, use"
    )


def test_tasks_can_be_steps_and_take_step_options() -> None:
    @step(enable_cache=False, extra={"kind": "decorated"})
    def decorated() -> int:
        return 1

    def plain(value: int) -> int:
        return value + 1

    pipe = Pipeline(name="mixed", steps=[
        PythonTask(function=decorated, name="make", returns=["value"]),
        PythonTask(function=plain, name="inc", extra={"kind": "option"}, timeout=30),
    ])
    run = pipe.execute()
    assert run.steps["make"].config["enable_cache"] is False
    assert run.steps["make"].config["extra"] == {"kind": "decorated"}
    assert run.steps["inc"].config["extra"] == {"kind": "option"}
    assert run.steps["inc"].config["timeout"] == 30
    assert run.steps["inc"].output.load() == 2


def test_task_without_returns_annotated_none_produces_nothing() -> None:
    def announce() -> None:
        print("hi")

    def value() -> int:
        return 5

    run = Pipeline(name="nothing", steps=[PythonTask(announce), PythonTask(value)]).execute()
    assert run.steps["announce"].outputs == {}
    assert run.steps["value"].outputs["value"][0].load() == 5


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Pipeline(steps=[]), "needs at least one PythonTask"),
        (lambda: Pipeline(steps=[step1]), "takes PythonTask(function=..., name=...) objects"),
        (lambda: Pipeline(steps=[PythonTask(step1, name="a"), PythonTask(step2, name="a")]), "task names must be unique; ['a']"),
        (lambda: Pipeline(), "Pipeline() needs steps=[PythonTask"),
        (lambda: PythonTask(step1, name="not valid"), "must be an identifier"),
        (lambda: PythonTask(step1, returns="a"), "returns must be a list of identifiers"),
        (lambda: PythonTask(step1, returns=["a", "a"]), "duplicate names in returns"),
        (lambda: PythonTask(step1, colour="red"), "unknown option(s) ['colour']"),
        (lambda: Pipeline(steps=[PythonTask(lambda *xs: 1, name="star")]), "*args/**kwargs parameters are not supported"),
    ],
)
def test_definition_errors_are_clear(build: object, message: str) -> None:
    with pytest.raises(StepDefinitionError) as info:
        build()  # type: ignore[operator]
    assert message in str(info.value)


def test_a_module_level_declarative_pipeline_can_be_snapshotted_and_triggered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "declared_flow.py").write_text(
        "from unspool import Pipeline, PythonTask\n\n"
        "def numbers(count: int) -> list[int]:\n    return list(range(count))\n\n"
        "def total(numbers: list[int]) -> int:\n    return sum(numbers)\n\n"
        "flow = Pipeline(name='declared', steps=[PythonTask(numbers), PythonTask(total)])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("declared_flow")
    try:
        snapshot = module.flow.create_snapshot("declared")
        assert (snapshot.source, snapshot.attribute) == ("declared_flow", "flow")
        run = Client().trigger_pipeline("declared", run_configuration={"parameters": {"count": 5}})
        assert run.status == ExecutionStatus.COMPLETED
        assert run.steps["total"].output.load() == 10
        assert run.snapshot_id == snapshot.id
    finally:
        sys.modules.pop("declared_flow", None)
