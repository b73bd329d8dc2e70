"""Config files: a YAML file configures a run, is validated strictly, and is recorded.

``pipeline.with_options(config_path=...)`` loads the file (``_config_file.py``); every problem
is one ``ConfigError`` naming the file, the key path and what was expected. The
``orchestrator:`` section chooses the executor (``_executors.KNOWN_EXECUTORS``).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import unspool
from unspool import (
    Client,
    ConfigError,
    ExecutionStatus,
    RunFailedError,
    StepRetryConfig,
    UnspoolError,
    pipeline,
    step,
)
from unspool._config_file import apply_config_file, load_config_file
from unspool._executors import KNOWN_EXECUTORS, validate_orchestrator


def sql(home: Path, query: str, *args: object) -> list[tuple]:
    Client()  # flushes buffered writes
    with sqlite3.connect(home / "unspool.db") as conn:
        return conn.execute(query, args).fetchall()


def write(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# -- the reference sample ------------------------------------------------------------------------------


def test_reference_depends_on_sample_runs_unchanged(tmp_path: Path, home: Path) -> None:
    """The docs' "Config Templates with depends_on" files, with only the import changed."""
    write(
        tmp_path,
        """\
        # config.yaml
        steps:
          some_step:
            parameters:
              arg: 3
        """,
    )
    (tmp_path / "run.py").write_text(
        textwrap.dedent(
            """\
            # run.py
            from unspool import step, pipeline

            @step
            def some_step(arg: int) -> None:
                print(f"arg is {arg}")

            @pipeline(dynamic=True, depends_on=[some_step])
            def dynamic_pipeline():
                some_step()

            if __name__ == "__main__":
                dynamic_pipeline.with_options(config_path="config.yaml")()
            """
        )
    )
    done = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "arg is 3" in done.stdout

    [run] = Client().list_pipeline_runs("dynamic_pipeline")
    assert run.status == ExecutionStatus.COMPLETED
    assert run.config["config_path"] == str((tmp_path / "config.yaml").resolve())
    assert run.steps["some_step"].parameters == {"arg": 3}
    assert "arg is 3" in run.steps["some_step"].logs
    assert sql(home, "SELECT parameters FROM step_runs WHERE step_name = 'some_step'") == [('{"arg": 3}',)]


# -- every key is applied ---------------------------------------------------------------------------------


def test_pipeline_level_keys_are_applied_and_recorded(tmp_path: Path) -> None:
    calls: list[int] = []

    @step
    def grow(n: int) -> int:
        calls.append(n)
        return n + 1

    @pipeline
    def configured(n: int = 1) -> None:
        grow(n)

    path = write(
        tmp_path,
        """\
        parameters: {n: 41}
        enable_cache: false
        execution_mode: fail_fast
        settings: {team: search}
        substitutions: {flavour: nightly}
        run_name: "configured-{flavour}-{time}"
        budget: {max_steps: 5, max_fan_out: 3, max_parallelism: 2, max_depth: 2, max_duration_s: 60}
        retry: {max_retries: 2, delay: 0, backoff: 1.5}
        orchestrator: {type: local, enable_parallel: true}
        """,
    )
    pipe = configured.with_options(config_path=str(path))
    first = pipe()
    second = pipe()

    assert calls == [41, 41]  # enable_cache: false -> the second run executed again
    assert first.parameters == {"n": 41}
    assert first.name.startswith("configured-nightly-")
    assert first.steps["grow"].outputs["output"][0].load() == 42
    assert second.steps["grow"].status == ExecutionStatus.COMPLETED
    recorded = first.config
    assert recorded["config_path"] == str(path.resolve())
    assert recorded["enable_cache"] is False
    assert recorded["execution_mode"] == "FAIL_FAST"
    assert recorded["settings"] == {"team": "search"}
    assert recorded["substitutions"] == {"flavour": "nightly"}
    assert recorded["budget"] == {
        "max_steps": 5, "max_fan_out": 3, "max_parallelism": 2, "max_depth": 2, "max_duration_s": 60, "spend": None,
    }
    assert recorded["retry"] == {"max_retries": 2, "delay": 0, "backoff": 1.5}
    assert recorded["orchestrator"] == {"type": "local", "enable_parallel": True}
    assert pipe.config.retry == StepRetryConfig(max_retries=2, delay=0, backoff=1.5)


def test_step_keys_are_applied_to_that_step(tmp_path: Path) -> None:
    attempts: list[int] = []

    @step
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return x

    @step
    def plain(x: int) -> int:
        return x

    @pipeline(dynamic=True, depends_on=[flaky])
    def stepwise() -> None:
        plain(flaky())

    path = write(
        tmp_path,
        """\
        steps:
          flaky:
            parameters: {x: 7}
            enable_cache: false
            retry: {max_retries: 1}
            settings: {gpu: false}
            runtime: inline
            substitutions: {part: a}
            extra: {owner: me}
            timeout: 30
        """,
    )
    run = stepwise.with_options(config_path=str(path))()

    flaky_run = run.steps["flaky"]
    assert flaky_run.status == ExecutionStatus.COMPLETED
    assert flaky_run.parameters == {"x": 7}
    assert [a["status"] for a in flaky_run.attempts] == ["failed", "completed"]
    assert flaky_run.config["enable_cache"] is False
    assert flaky_run.config["retry"] == {"max_retries": 1, "delay": 0.0, "backoff": 1.0}
    assert flaky_run.config["settings"] == {"gpu": False}
    assert flaky_run.config["runtime"] == "inline"
    assert flaky_run.config["substitutions"] == {"part": "a"}
    assert flaky_run.config["extra"] == {"owner": "me"}
    assert flaky_run.config["timeout"] == 30
    assert run.steps["plain"].config["retry"] is None  # only the named step is configured


def test_static_pipeline_steps_section_applies_to_compiled_steps(tmp_path: Path) -> None:
    @step
    def scale(value: int, factor: int = 1) -> int:
        return value * factor

    @pipeline
    def static_scaled() -> None:
        scale(5)

    path = write(tmp_path, "steps:\n  scale:\n    parameters: {factor: 3}\n")
    run = static_scaled.with_options(config_path=str(path))()
    assert run.steps["scale"].parameters == {"value": 5, "factor": 3}
    assert run.steps["scale"].output.load() == 15


def test_explicit_with_options_arguments_win_over_the_file(tmp_path: Path) -> None:
    @step
    def echo(x: int) -> int:
        return x

    @pipeline
    def layered(x: int = 0) -> None:
        echo(x)

    path = write(
        tmp_path,
        """\
        enable_cache: true
        settings: {a: 1, b: 2}
        parameters: {x: 1}
        run_name: from-file-{time}
        """,
    )
    pipe = layered.with_options(
        config_path=str(path), enable_cache=False, settings={"b": 3}, parameters={"x": 2}
    )
    assert pipe.config.enable_cache is False
    assert pipe.config.settings == {"a": 1, "b": 3}
    assert pipe.config.parameters == {"x": 2}
    assert pipe.config.run_name == "from-file-{time}"  # not given explicitly: the file's
    run = pipe()
    assert run.parameters == {"x": 2}
    assert run.config["settings"] == {"a": 1, "b": 3}
    assert run.name.startswith("from-file-")
    # a call argument wins over both
    assert pipe(x=9).parameters == {"x": 9}


def test_apply_config_file_is_what_the_cli_calls(tmp_path: Path) -> None:
    @step
    def echo(x: int) -> int:
        return x

    @pipeline
    def cli_like(x: int = 0) -> None:
        echo(x)

    path = write(tmp_path, "parameters: {x: 5}\n")
    run = apply_config_file(cli_like, path)()
    assert run.parameters == {"x": 5}
    assert run.config["config_path"] == str(path.resolve())
    assert load_config_file(path).options() == {"parameters": {"x": 5}}


def test_empty_sections_and_empty_file_are_fine(tmp_path: Path) -> None:
    @step
    def some_step(arg: int = 1) -> int:
        return arg

    @pipeline(dynamic=True, depends_on=[some_step])
    def tolerant() -> None:
        some_step()

    assert tolerant.with_options(config_path=str(write(tmp_path, ""))).config.steps == {}
    path = write(tmp_path, "steps:\n  some_step:\nsettings:\n", "sparse.yaml")
    assert tolerant.with_options(config_path=str(path))().steps["some_step"].status == ExecutionStatus.COMPLETED


# -- clear errors -------------------------------------------------------------------------------------------


@step
def some_step(arg: int) -> None:
    print(arg)


@pipeline(dynamic=True, depends_on=[some_step])
def dyn_pipeline() -> None:
    some_step()


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        dyn_pipeline.with_options(config_path=str(path))
    return info.value


def test_config_error_is_an_exported_unspool_error() -> None:
    assert unspool.ConfigError is ConfigError
    assert issubclass(ConfigError, UnspoolError)
    assert "ConfigError" in unspool.__all__


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("enable_cahce: true\n", "enable_cahce", "unknown key; expected one of: parameters, enable_cache"),
        ("steps:\n  some_step:\n    retyr: {}\n", "steps.some_step.retyr", "expected one of: parameters, enable_cache, retry"),
        ("steps:\n  some_step:\n    retry: {max_retries: many}\n", "steps.some_step.retry.max_retries", "expected a valid integer, got 'many'"),
        ("steps:\n  some_step:\n    retry: {max_retries: -1}\n", "steps.some_step.retry.max_retries", "expected a number greater than or equal to 0, got -1"),
        ("steps:\n  some_step:\n    runtime: remote\n", "steps.some_step.runtime", "expected 'inline' or 'isolated', got 'remote'"),
        ("steps:\n  some_step:\n    timeout: 0\n", "steps.some_step.timeout", "expected a number greater than 0"),
        ("enable_cache: maybe\n", "enable_cache", "expected a valid boolean, got 'maybe'"),
        ("execution_mode: sometimes\n", "execution_mode", "expected 'FAIL_FAST', 'STOP_ON_FAILURE' or 'CONTINUE_ON_FAILURE'"),
        ("budget: {max_steps: 0}\n", "budget.max_steps", "expected a number greater than 0, got 0"),
        ("budget: {max_stepz: 3}\n", "budget.max_stepz", "expected one of: max_steps, max_fan_out"),
        ("retry: {delay: soon}\n", "retry.delay", "expected a valid number, got 'soon'"),
        ("substitutions: {a: 1}\n", "substitutions.a", "expected a valid string, got 1"),
        ("settings: [1, 2]\n", "settings", "expected a mapping, got [1, 2]"),
        ("steps:\n  some_step: 3\n", "steps.some_step", "expected a mapping, got 3"),
        ("orchestrator: {type: kubernetes}\n", "orchestrator.type", "expected one of ['local'"),
        ("orchestrator: {type: local, enable_parallel: yes please}\n", "orchestrator.enable_parallel", "expected bool, got 'yes please'"),
        ("orchestrator: {type: local, workers: 3}\n", "orchestrator.workers", "unknown option of executor 'local'; expected one of: enable_parallel"),
        ("steps:\n  other_step: {}\n", "steps.other_step", "step 'other_step' is not in depends_on of dynamic pipeline 'dyn_pipeline' (it lists some_step)"),
        ("steps:\n  some_step:\n    parameters: {argh: 1}\n", "steps.some_step.parameters.argh", "step 'some_step' has no parameter 'argh'; expected one of: arg"),
        ("parameters: {n: 1}\n", "parameters.n", "pipeline 'dyn_pipeline' has no parameter 'n'; expected one of: (it takes none)"),
    ],
)
def test_invalid_config_is_one_clear_error(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write(tmp_path, text)
    error = config_error(path)
    assert error.file == str(path.resolve())
    assert error.key == key
    message = str(error)
    assert message.startswith(f"config file {path.resolve()}: ")
    assert f"{key}: " in message
    assert expected in message


def test_several_problems_are_listed_together(tmp_path: Path) -> None:
    path = write(tmp_path, "enable_cache: 3\nbudget: {max_steps: -1}\nsteps: {some_step: {timeout: x}}\n")
    error = config_error(path)
    assert [key for key, _ in error.problems] == ["enable_cache", "budget.max_steps", "steps.some_step.timeout"]
    assert str(error).startswith(f"config file {path.resolve()} has 3 problems:\n")


def test_missing_file_broken_yaml_and_non_mapping(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    error = config_error(missing)
    assert str(error) == f"config file {missing}: the file does not exist; pass the path of a YAML config file"

    broken = write(tmp_path, "steps:\n  some_step: [1\n", "broken.yaml")
    error = config_error(broken)
    assert str(error).startswith(f"config file {broken.resolve()}: not valid YAML at line 3, column 1: ")

    listed = write(tmp_path, "- a\n- b\n", "list.yaml")
    assert "expected a mapping of configuration keys at the top level, got ['a', 'b']" in str(config_error(listed))

    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    assert "is a directory, not a file" in str(config_error(folder))


def test_static_pipeline_unknown_step_name_fails_the_run_before_any_step(tmp_path: Path, home: Path) -> None:
    ran: list[str] = []

    @step
    def real_step() -> int:
        ran.append("real_step")
        return 1

    @pipeline
    def static_pipe() -> None:
        real_step()

    path = write(tmp_path, "steps:\n  real_stpe:\n    enable_cache: false\n")
    pipe = static_pipe.with_options(config_path=str(path))  # static: names are checked after compiling
    with pytest.raises(ConfigError) as info:
        pipe()
    assert str(info.value) == (
        f"config file {path.resolve()}: steps.real_stpe: pipeline 'static_pipe' has no step named "
        "'real_stpe'; expected one of: real_step"
    )
    assert ran == []
    [run] = Client().list_pipeline_runs("static_pipe")
    assert run.status == ExecutionStatus.FAILED
    assert run.error["type"] == "ConfigError"
    assert sql(home, "SELECT status FROM step_runs WHERE run_id = ?", run.id) == [("stopped",)]


# -- executors: the orchestrator section ----------------------------------------------------------------


NAPS: dict[str, threading.Barrier | None] = {"meet": None}


@step(enable_cache=False)
def nap(label: str) -> str:
    """When the test expects parallel steps, the two naps wait for each other, so they overlap for
    certain (and fail if they cannot run at once); else each naps, long enough to overlap if they ran
    at once."""
    meet = NAPS["meet"]
    if meet is not None:
        meet.wait(timeout=60)
    else:
        time.sleep(0.2)
    return label


def naps_meet(expected: bool) -> None:
    NAPS["meet"] = threading.Barrier(2) if expected else None


@pipeline
def two_naps() -> None:
    nap("a")
    nap("b")


def overlapped(run: unspool.PipelineRun) -> bool:
    a, b = run.steps["nap"], run.steps["nap_2"]
    return a.start_time < b.end_time and b.start_time < a.end_time


def test_without_orchestrator_section_independent_steps_run_in_parallel() -> None:
    naps_meet(True)
    run = two_naps()
    assert run.config["orchestrator"] == {}
    assert overlapped(run)


def test_type_local_alone_is_sequential(tmp_path: Path) -> None:
    naps_meet(False)
    run = two_naps.with_options(config_path=str(write(tmp_path, "orchestrator: {type: local}\n")))()
    assert run.config["orchestrator"] == {"type": "local", "enable_parallel": False}
    assert not overlapped(run)


def test_type_local_with_enable_parallel_runs_steps_concurrently(tmp_path: Path) -> None:
    path = write(tmp_path, "orchestrator:\n  type: local\n  enable_parallel: true\n")
    naps_meet(True)
    run = two_naps.with_options(config_path=str(path))()
    assert run.config["orchestrator"] == {"type": "local", "enable_parallel": True}
    assert overlapped(run)


def test_orchestrator_given_in_python_is_validated_the_same_way() -> None:
    assert two_naps.with_options(orchestrator={"type": "local"}).config.orchestrator == {
        "type": "local", "enable_parallel": False,
    }
    with pytest.raises(ConfigError, match=r"orchestrator\.type: expected one of \['local'"):
        two_naps.with_options(orchestrator={"type": "k8s"})


def test_executor_registry() -> None:
    assert "local" in KNOWN_EXECUTORS
    assert validate_orchestrator(None) == {}
    assert validate_orchestrator({"enable_parallel": True}) == {"type": "local", "enable_parallel": True}
    with pytest.raises(ConfigError) as info:
        validate_orchestrator({"type": "nope"})
    for name in KNOWN_EXECUTORS:
        assert repr(name) in str(info.value)


def test_failing_run_configured_from_a_file_still_records_the_file(tmp_path: Path) -> None:
    @step
    def boom() -> None:
        raise ValueError("no")

    @pipeline
    def failing() -> None:
        boom()

    path = write(tmp_path, "execution_mode: STOP_ON_FAILURE\n")
    with pytest.raises(RunFailedError):
        failing.with_options(config_path=str(path))()
    [run] = Client().list_pipeline_runs("failing")
    assert run.config["config_path"] == str(path.resolve())
    assert run.config["execution_mode"] == "STOP_ON_FAILURE"


# -- config-file parameters against the code's (issue 12, item 4) ------------------------------------

def test_a_config_parameter_fills_what_the_code_leaves_out_and_a_conflict_is_an_error(tmp_path: Path) -> None:
    @step
    def some_step(arg: int, other: int = 0) -> int:
        return arg + other

    @pipeline(dynamic=True, depends_on=[some_step])
    def filled() -> None:
        some_step(other=1)  # arg from the file

    @pipeline(dynamic=True, depends_on=[some_step])
    def agrees() -> None:
        some_step(3)  # passes the file's value: fine

    @pipeline(dynamic=True, depends_on=[some_step])
    def conflicts() -> None:
        some_step(arg=2)

    path = write(tmp_path, "steps:\n  some_step:\n    parameters: {arg: 3}\n")
    run = filled.with_options(config_path=str(path))()
    assert run.steps["some_step"].parameters == {"arg": 3, "other": 1}
    assert agrees.with_options(config_path=str(path))().steps["some_step"].parameters == {"arg": 3, "other": 0}

    with pytest.raises(ConfigError) as info:
        conflicts.with_options(config_path=str(path))()
    message = str(info.value)
    assert "some_step" in message and "'arg'" in message and "3" in message and "2" in message
    assert "\n" not in message
    failed = Client().list_pipeline_runs(pipeline_name="conflicts")[0]
    assert failed.status.value == "failed" and "some_step" not in failed.steps  # nothing ran


def test_declarative_tasks_take_config_parameters_instead_of_their_defaults(tmp_path: Path) -> None:
    from unspool import Pipeline, PythonTask

    def load(n: int = 2) -> list[int]:
        return list(range(n))

    def scale(load: list[int], factor: float = 2.0) -> float:
        return sum(load) * factor

    pipe = Pipeline(steps=[PythonTask(function=load, name="load"), PythonTask(function=scale, name="scale")],
                    name="declared")
    path = write(tmp_path, "steps:\n  scale:\n    parameters: {factor: 10}\n")
    run = pipe.execute(config=path)
    assert run.steps["scale"].output.load() == 10.0  # 0 + 1, times the file's factor
    assert run.steps["scale"].parameters == {"factor": 10}
    assert pipe.execute().steps["scale"].output.load() == 2.0  # the default without the file
