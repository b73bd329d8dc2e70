"""Steps: how ``@step`` is configured, how outputs are read from annotations, how inputs bind."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

from unspool import (
    ArtifactConfig,
    Client,
    ExecutionStatus,
    RunFailedError,
    Step,
    StepDefinitionError,
    StepFailedError,
    StepInputError,
    StepOutputError,
    pipeline,
    step,
)
from unspool._materializers import BuiltInMaterializer


def run_dynamic(body: Any, name: str = "p") -> Any:
    """Run ``body`` as a dynamic pipeline body and return the stored run."""
    return pipeline(name=name, dynamic=True)(body)()


def only_run() -> Any:
    [run] = Client().list_pipeline_runs()
    return run


# -- declaring steps ---------------------------------------------------------------------------------


def test_bare_and_called_decorator_both_make_steps() -> None:
    @step
    def bare(x: int) -> int:
        return x + 1

    @step()
    def called(x: int) -> int:
        return x + 2

    assert isinstance(bare, Step) and isinstance(called, Step)
    assert bare.name == "bare" and called.name == "called"
    assert bare.__name__ == "bare" and bare.__doc__ is None
    # Outside a pipeline a step is the plain function: unit-testable, nothing is stored.
    assert bare(1) == 2 and called(1) == 3
    assert bare.entrypoint(5) == 6
    assert Client().list_pipeline_runs() == []


def test_step_options_are_recorded_on_the_step_run(home: Path) -> None:
    @step(
        name="renamed",
        enable_cache=False,
        runtime="isolated",
        substitutions={"kind": "score"},
        settings={"resources": {"memory": "1GB"}, "docker": {"image": "python:3.11"}},
        output_materializers=BuiltInMaterializer,
        extra={"owner": "team-a", "tags": ["x"]},
    )
    def configured() -> int:
        return 1

    run = run_dynamic(lambda: configured())
    again = run_dynamic(lambda: configured())

    assert again.steps["renamed"].status == ExecutionStatus.COMPLETED  # not cached
    step_run = run.steps["renamed"]
    assert step_run.name == "renamed"
    assert step_run.config == {
        "enable_cache": False,
        "runtime": "isolated",
        "substitutions": {"kind": "score"},
        "settings": {"resources": {"memory": "1GB"}, "docker": {"image": "python:3.11"}},
        "extra": {"owner": "team-a", "tags": ["x"]},
        "retry": None,
        "timeout": None,
        "output_materializers": "unspool._materializers:BuiltInMaterializer",
    }
    with sqlite3.connect(home / "unspool.db") as conn:
        [(raw,)] = conn.execute("SELECT config FROM step_runs WHERE id = ?", (step_run.id,)).fetchall()
    assert json.loads(raw)["settings"]["docker"] == {"image": "python:3.11"}


def test_unknown_or_invalid_step_options_are_definition_errors() -> None:
    with pytest.raises(StepDefinitionError, match="unknown option"):
        step(colour="blue")(lambda: None)
    with pytest.raises(StepDefinitionError, match="runtime must be 'inline' or 'isolated'"):

        @step(runtime="container")
        def s() -> None: ...

    @step
    def ok() -> None: ...

    with pytest.raises(StepDefinitionError, match=r"unknown option.*valid options"):
        ok.with_options(cache=False)
    with pytest.raises(StepDefinitionError, match="already a step"):
        step(ok)


def test_with_options_returns_a_configured_copy_and_leaves_the_original_alone() -> None:
    @step(settings={"a": 1}, extra={"k": "v"})
    def base() -> int:
        return 1

    copy = base.with_options(
        enable_cache=False, runtime="isolated", settings={"b": 2}, extra={"k2": "v2"}, name="base_copy"
    )

    assert copy is not base
    assert copy.func is base.func
    assert copy.config.enable_cache is False and copy.config.runtime == "isolated"
    assert copy.config.settings == {"a": 1, "b": 2}  # dicts merge
    assert copy.config.extra == {"k": "v", "k2": "v2"}
    assert copy.name == "base_copy"
    # The original is unchanged.
    assert base.config.enable_cache is None and base.config.runtime is None
    assert base.config.settings == {"a": 1} and base.config.extra == {"k": "v"}
    assert base.name == "base"

    def body() -> None:
        base()
        copy()

    run = run_dynamic(body)
    assert list(run.steps) == ["base", "base_copy"]
    assert run.steps["base"].config["runtime"] == "inline"
    assert run.steps["base_copy"].config["runtime"] == "isolated"
    assert run.steps["base_copy"].config["settings"] == {"a": 1, "b": 2}


# -- outputs from return annotations ------------------------------------------------------------------


def test_plain_annotation_gives_one_output_named_output() -> None:
    @step
    def plain() -> int:
        return 4

    @step
    def unannotated():
        return "anything"

    @step
    def nothing() -> None:
        return None

    def body() -> None:
        plain()
        unannotated()
        nothing()

    run = run_dynamic(body)
    assert list(run.steps["plain"].outputs) == ["output"]
    assert run.steps["plain"].output.name == "p::plain::output"
    assert run.steps["plain"].output.load() == 4
    assert run.steps["unannotated"].output.load() == "anything"
    assert run.steps["nothing"].outputs == {}


def test_annotated_name_and_artifact_config_name_the_output() -> None:
    @step
    def named() -> Annotated[int, "my_number"]:
        return 1

    @step
    def configured() -> Annotated[dict, ArtifactConfig(name="my_dict", tags=["gold", "eval"])]:
        return {"a": 1}

    def body() -> None:
        named()
        configured()

    run = run_dynamic(body)
    assert list(run.steps["named"].outputs) == ["my_number"]
    assert run.steps["named"].output.name == "my_number"
    out = run.steps["configured"].outputs["my_dict"][0]
    assert out.name == "my_dict"
    assert out.tags == ["gold", "eval"]
    assert Client().get_artifact_version("my_dict").tags == ["gold", "eval"]


def test_tuple_annotation_gives_several_outputs() -> None:
    @step
    def unnamed() -> tuple[int, str]:
        return 1, "a"

    @step
    def named() -> tuple[Annotated[int, "count"], Annotated[str, ArtifactConfig(name="label")]]:
        return 2, "b"

    @step
    def variadic() -> tuple[int, ...]:
        return (1, 2, 3)

    def body() -> None:
        unnamed()
        named()
        variadic()

    run = run_dynamic(body)
    outs = run.steps["unnamed"].outputs
    assert list(outs) == ["output_0", "output_1"]
    assert [outs["output_0"][0].load(), outs["output_1"][0].load()] == [1, "a"]
    assert [v[0].name for v in outs.values()] == ["p::unnamed::output_0", "p::unnamed::output_1"]
    assert {k: v[0].load() for k, v in run.steps["named"].outputs.items()} == {"count": 2, "label": "b"}
    # tuple[int, ...] is one output holding a tuple
    assert run.steps["variadic"].output.load() == (1, 2, 3)
    with pytest.raises(ValueError, match="2 outputs"):
        run.steps["unnamed"].output  # noqa: B018


@pytest.mark.parametrize(
    ("returned", "annotation_kind", "message"),
    [
        ("a", "int", r"step 'mismatch' output 'output' is annotated as int but the step returned a str"),
        (1, "pair", r"step 'mismatch' declares 2 outputs \(first, second\) but returned a int"),
        ((1, 2, 3), "pair", r"step 'mismatch' declares 2 outputs \(first, second\) but returned 3 values"),
        (5, "none", r"step 'mismatch' is annotated to return None but returned a int"),
        ((1, 2), "typed_pair", r"step 'mismatch' output 'second' is annotated as str but the step returned a int"),
    ],
)
def test_annotation_and_return_mismatch_is_a_step_output_error(
    returned: Any, annotation_kind: str, message: str
) -> None:
    if annotation_kind == "int":

        def mismatch() -> int:
            return returned
    elif annotation_kind == "none":

        def mismatch() -> None:
            return returned
    elif annotation_kind == "pair":

        def mismatch() -> tuple[Annotated[int, "first"], Annotated[int, "second"]]:
            return returned
    else:

        def mismatch() -> tuple[Annotated[int, "first"], Annotated[str, "second"]]:
            return returned

    s = step(mismatch)
    caught: list[StepFailedError] = []

    def body() -> None:
        try:
            s()
        except StepFailedError as exc:
            caught.append(exc)

    run_dynamic(body)  # the body handled the failure

    [exc] = caught
    assert isinstance(exc.original_exception, StepOutputError)
    assert exc.error["type"] == "StepOutputError"
    assert re.search(message, str(exc.original_exception))
    assert re.search(message, exc.error["message"])
    step_run = only_run().steps["mismatch"]
    assert step_run.status == ExecutionStatus.FAILED
    assert step_run.error["type"] == "StepOutputError"
    assert step_run.outputs == {}


def test_output_mismatch_in_a_static_pipeline_names_step_and_output() -> None:
    @step
    def wrong() -> Annotated[int, "score"]:
        return "high"  # type: ignore[return-value]

    @pipeline
    def static_mismatch() -> None:
        wrong()

    with pytest.raises(RunFailedError, match="wrong"):
        static_mismatch()
    step_run = only_run().steps["wrong"]
    assert step_run.error["type"] == "StepOutputError"
    assert "step 'wrong' output 'score' is annotated as int" in step_run.error["message"]


def test_int_is_accepted_for_float_and_optional_outputs() -> None:
    @step
    def as_float() -> float:
        return 3

    @step
    def optional() -> int | None:
        return None

    def body() -> None:
        as_float()
        optional()

    run = run_dynamic(body)
    assert run.steps["as_float"].output.load() == 3
    assert run.steps["optional"].output.load() is None


# -- inputs: parameters and artifacts -------------------------------------------------------------------


def test_plain_values_are_parameters_recorded_on_the_step_run() -> None:
    @step
    def configure(lr: float, layers: list, opts: dict, name: str = "model", flag: bool = True) -> None: ...

    run = run_dynamic(lambda: configure(0.1, [64, 32], opts={"dropout": 0.5, "act": None}, flag=False))

    assert run.steps["configure"].parameters == {
        "lr": 0.1,
        "layers": [64, 32],
        "opts": {"dropout": 0.5, "act": None},
        "name": "model",  # defaults are recorded too
        "flag": False,
    }
    assert run.steps["configure"].inputs == {}


def test_non_json_parameter_is_a_clear_step_input_error() -> None:
    @step
    def takes(value: Any) -> None: ...

    with pytest.raises(StepInputError, match=r"parameter 'value' of step 'takes' is a lock, which cannot be recorded"):
        run_dynamic(lambda: takes(threading.Lock()))
    run = only_run()
    assert run.status == ExecutionStatus.FAILED
    assert run.error["type"] == "StepInputError"
    assert run.steps == {}  # nothing was started


def test_artifacts_futures_and_lists_of_them_are_input_artifacts() -> None:
    @step
    def number(x: int) -> int:
        return x

    @step
    def add(a: int, b: int, rest: list[int], factor: int = 1) -> int:
        return (a + b + sum(rest)) * factor

    def body() -> None:
        a = number(1)  # an artifact (sync call)
        b = number.submit(2)  # a future
        c = number.submit(3).result()  # the future's artifact
        add(a, b, [c, number(4)], factor=2)

    run = run_dynamic(body)
    add_run = run.steps["add"]
    assert add_run.output.load() == 20
    assert add_run.parameters == {"factor": 2}
    assert {k: [v.id for v in vs] for k, vs in add_run.inputs.items()} == {
        "a": [run.steps["number"].output.id],
        "b": [run.steps["number_2"].output.id],
        "rest": [run.steps["number_3"].output.id, run.steps["number_4"].output.id],
    }
    assert sorted(add_run.upstream) == ["number", "number_2", "number_3", "number_4"]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s(1, 2, 3),
        lambda s: s(1, c=3),
        lambda s: s(),
    ],
    ids=["too-many", "unknown-keyword", "missing"],
)
def test_wrong_arguments_are_a_step_input_error_naming_step_and_signature(call: Any) -> None:
    @step
    def two_args(a: int, b: int) -> int:
        return a + b

    with pytest.raises(StepInputError) as info:
        run_dynamic(lambda: call(two_args))
    message = str(info.value)
    assert "step 'two_args' called with wrong arguments" in message
    assert "two_args(a: " in message and "b: " in message
    assert only_run().status == ExecutionStatus.FAILED


def test_var_args_steps_are_rejected() -> None:
    @step
    def star(*values: int) -> int:
        return sum(values)

    with pytest.raises(StepDefinitionError, match=r"\*args"):
        run_dynamic(lambda: star(1, 2))


# -- invocation ids ----------------------------------------------------------------------------------------


def test_invocation_ids_are_deterministic_in_call_order() -> None:
    @step
    def s(i: int) -> int:
        return i

    @step
    def t() -> None: ...

    def body() -> None:
        s(0)
        t()
        futures = [s.submit(i) for i in range(1, 4)]
        t()
        for f in futures:
            f.result()
        s.with_options(enable_cache=False)(9)

    first = run_dynamic(body)
    second = run_dynamic(body)
    expected = ["s", "t", "s_2", "s_3", "s_4", "t_2", "s_5"]
    assert list(first.steps) == expected
    assert list(second.steps) == expected
    assert [first.steps[i].parameters for i in ("s", "s_2", "s_3", "s_4", "s_5")] == [
        {"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}, {"i": 9}
    ]
    assert [s.position for s in first.steps.values()] == list(range(7))


class _Scored(TypedDict):
    name: str
    score: float


@step
def _make_scored(name: str) -> _Scored:
    return {"name": name, "score": 0.5}


@step
def _best_of(items: list[_Scored]) -> _Scored:
    return max(items, key=lambda item: item["score"])


def test_typed_dict_outputs_and_inputs_are_dicts_at_run_time() -> None:
    @pipeline(dynamic=True)
    def p() -> None:
        _best_of([_make_scored("a"), _make_scored("b")])

    run = p()
    assert run.status.value == "completed"
    assert run.steps["_best_of"].outputs["output"][0].load() == {"name": "a", "score": 0.5}
