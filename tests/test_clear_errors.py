"""Mistakes get one line saying what was wrong and how to fix it (issue 12, item 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest

from unspool import (
    ArtifactConfig,
    Client,
    StepDefinitionError,
    StepFailedError,
    StepInputError,
    StoreError,
    pipeline,
    step,
)


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message, message
    return message


@step
def number(x: int) -> int:
    return x


@step
def total(values: list[int]) -> int:
    return sum(values)


def test_a_list_mixing_artifacts_and_plain_values_says_exactly_that() -> None:
    @pipeline(dynamic=True)
    def mixed() -> None:
        total([number(1), 2, number(3)])

    with pytest.raises(StepInputError) as info:
        mixed()
    message = _one_line(info.value)
    assert "'values'" in message and "total" in message and "mixes" in message and "[1]" in message
    [run] = Client().list_pipeline_runs(pipeline_name="mixed")
    assert "total" not in run.steps


def test_an_artifact_name_with_an_empty_placeholder_is_a_definition_error() -> None:
    @step
    def nameless() -> Annotated[int, ArtifactConfig(name="score_{}")]:
        return 1

    @pipeline(dynamic=True)
    def p() -> None:
        nameless()

    with pytest.raises(StepDefinitionError) as info:
        p()
    message = _one_line(info.value)
    assert "score_{}" in message and "nameless" in message and "{suffix}" in message


def test_a_wrong_input_type_says_input_not_output() -> None:
    @step
    def text() -> str:
        return "abc"

    @step
    def wants_int(x: int) -> int:
        return x + 1

    @pipeline(dynamic=True)
    def p() -> None:
        try:
            wants_int(text())
        except StepFailedError as exc:
            raise exc.original_exception from None

    with pytest.raises(StepInputError) as info:
        p()
    message = _one_line(info.value)
    assert "input 'x'" in message and "wants_int" in message and "int" in message and "str" in message
    assert "output" not in message.split("input")[0]


def test_positional_only_parameters_are_rejected_when_the_step_is_defined() -> None:
    def positional(x: int, /) -> int:
        return x

    with pytest.raises(StepDefinitionError) as info:
        step(positional)
    message = _one_line(info.value)
    assert "'x'" in message and "positional-only" in message and "/" in message


def test_get_artifact_version_accepts_latest() -> None:
    @pipeline(dynamic=True)
    def p(x: int) -> None:
        number(x)

    p(1)
    p(2)
    name = Client().list_artifact_versions()[0].name
    assert Client().get_artifact_version(name, "latest").load() == 2
    with pytest.raises(Exception) as info:
        Client().get_artifact_version(name, "newest")
    message = _one_line(info.value)
    assert "'newest'" in message and "latest" in message


def test_an_artifact_store_path_that_is_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_folder = tmp_path / "artifacts.txt"
    not_a_folder.write_text("oops")
    monkeypatch.setenv("UNSPOOL_ARTIFACT_STORE", str(not_a_folder))

    @pipeline(dynamic=True)
    def p() -> None:
        number(1)

    with pytest.raises(StoreError) as info:
        p()
    message = _one_line(info.value)
    assert str(not_a_folder) in message and "UNSPOOL_ARTIFACT_STORE" in message and "folder" in message


def test_names_longer_than_a_file_name_work_and_the_store_limit_is_said_at_decoration(home: Path) -> None:
    """Names never become file names as they are (see test_trust): only the metadata store's
    255-character columns bound them, and that is said when the step is defined."""
    with pytest.raises(StepDefinitionError) as info:
        step(name="s" * 300)(lambda: 1)
    message = _one_line(info.value)
    assert "300" in message and "245" in message and "255" in message

    @step(name="s" * 245)
    def long_named() -> Annotated[int, "o" * 250]:
        return 1

    @pipeline(dynamic=True)
    def p() -> None:
        long_named()

    run = p()
    assert run.steps["s" * 245].outputs["o" * 250][0].load() == 1
    assert all(len(part.name.encode()) <= 255 for part in home.rglob("*"))
