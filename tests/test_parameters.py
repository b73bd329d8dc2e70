"""Parameters: the types ZenML accepts, recorded as JSON and converted back into the
annotated type; mapping over any iterable; clear errors for values that do not fit."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from pathlib import Path

import pytest
from pydantic import BaseModel

from unspool import Client, StepInputError, pipeline, step


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Settings(BaseModel):
    lr: float
    layers: int = 2


@step(enable_cache=False)
def typed(
    settings: Settings,
    color: Color,
    day: dt.date,
    when: dt.datetime,
    ident: uuid.UUID,
    where: Path,
    pair: tuple[int, str],
    tags: set[str],
) -> str:
    assert isinstance(settings, Settings) and isinstance(color, Color)
    assert type(day) is dt.date and isinstance(when, dt.datetime)
    assert isinstance(ident, uuid.UUID) and isinstance(where, Path)
    assert isinstance(pair, tuple) and isinstance(tags, set)
    return f"{settings.lr}|{color.value}|{day}|{when:%H:%M}|{ident}|{where.name}|{pair}|{sorted(tags)}"


IDENT = uuid.UUID("12345678-1234-5678-1234-567812345678")
EXPECTED = f"0.1|blue|2024-01-31|12:30|{IDENT}|data.csv|(1, 'a')|['x', 'y']"


def test_zenml_parameter_types_reach_the_step_as_their_types_and_are_recorded_as_json() -> None:
    @pipeline(dynamic=True)
    def p() -> None:
        typed(Settings(lr=0.1), Color.BLUE, dt.date(2024, 1, 31), dt.datetime(2024, 1, 31, 12, 30), IDENT,
              Path("/tmp/data.csv"), (1, "a"), {"y", "x"})

    run = p()
    step_run = run.steps["typed"]
    assert step_run.output.load() == EXPECTED
    assert step_run.parameters == {
        "settings": {"lr": 0.1, "layers": 2}, "color": "blue", "day": "2024-01-31",
        "when": "2024-01-31T12:30:00", "ident": str(IDENT), "where": "/tmp/data.csv",
        "pair": [1, "a"], "tags": ["x", "y"],
    }


def test_json_values_are_converted_into_the_annotated_types() -> None:
    """What a config file, --param, a snapshot trigger or a resume gives back is JSON."""
    @pipeline(dynamic=True)
    def p(settings: Settings, color: Color, day: dt.date, ident: uuid.UUID) -> None:
        typed(settings, color, day, "2024-01-31T12:30:00", str(IDENT), "/tmp/data.csv", [1, "a"], ["x", "y"])

    run = p(settings={"lr": 0.1}, color="blue", day="2024-01-31", ident=str(IDENT))
    assert run.steps["typed"].output.load() == EXPECTED
    assert run.parameters["day"] == "2024-01-31"


def test_a_value_that_does_not_convert_is_one_line_naming_the_parameter() -> None:
    @step
    def count(n: int) -> int:
        return n

    @pipeline(dynamic=True)
    def p() -> None:
        count("abc")

    with pytest.raises(StepInputError) as info:
        p()
    message = str(info.value)
    assert "'n'" in message and "int" in message and "'abc'" in message and "\n" not in message


def test_map_takes_any_iterable() -> None:
    @step
    def square(x: int) -> int:
        return x * x

    @pipeline(dynamic=True)
    def p() -> None:
        square.map(range(3))
        square.map(x for x in (3, 4))
        square.map(iter([5]))

    run = p()
    assert [s.output.load() for s in run.steps.values()] == [0, 1, 4, 9, 16, 25]


def test_cli_params_are_converted_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unspool._cli import app

    flow = tmp_path / "typed_flow.py"
    flow.write_text(
        "import datetime as dt\n"
        "from unspool import pipeline, step\n\n"
        "@step\n"
        "def weekday(day: dt.date, n: int) -> str:\n"
        "    return f'{day:%A}:{n}'\n\n"
        "@pipeline(dynamic=True)\n"
        "def typed_flow(day: dt.date, n: int = 1) -> None:\n"
        "    weekday(day, n)\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["run", f"{flow}:typed_flow", "--param", "day=2024-01-31", "--param", "n=2"])
    assert result.exit_code == 0, result.output
    [run] = Client().list_pipeline_runs(pipeline_name="typed_flow")
    assert run.steps["weekday"].output.load() == "Wednesday:2"

    result = runner.invoke(app, ["run", f"{flow}:typed_flow", "--param", "day=2024-01-31", "--param", "n=abc"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "'n'" in lines[0] and "'abc'" in lines[0] and "int" in lines[0]
    assert len(Client().list_pipeline_runs(pipeline_name="typed_flow")) == 1  # nothing ran



_RESUME: dict[str, object] = {"fixed": False, "seen": []}


@step
def resume_first(day: dt.date) -> str:
    return day.isoformat()


@step
def resume_second(text: str) -> str:
    if not _RESUME["fixed"]:
        raise RuntimeError("not yet")
    return text


@pipeline(dynamic=True)
def resumable(day: dt.date) -> None:
    _RESUME["seen"].append(type(day))  # type: ignore[attr-defined]
    resume_second(resume_first(day))


def test_a_resumed_run_gets_its_parameters_back_as_their_types() -> None:
    _RESUME.update(fixed=False, seen=[])
    with pytest.raises(Exception, match="not yet"):
        resumable(dt.date(2024, 1, 31))
    run = Client().list_pipeline_runs(pipeline_name="resumable")[0]
    _RESUME["fixed"] = True
    resumed = Client().resume_pipeline_run(run.id)
    assert resumed.status.value == "completed"
    assert _RESUME["seen"] == [dt.date, dt.date]
    assert resumed.steps["resume_first"].status.value == "completed"
    assert resumed.steps["resume_first"].id == run.steps["resume_first"].id  # reused, not run again
    assert resumed.steps["resume_second"].output.load() == "2024-01-31"
