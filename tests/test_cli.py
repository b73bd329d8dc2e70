"""The ``unspool`` command line: run pipelines from files, then read back runs, DAGs, logs and
artifacts. Every check on printed text is paired with a check on what the stores hold."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unspool import Client, ExecutionStatus, NotFoundError
from unspool._cli import app

FLOWS = '''
from unspool import Budget, pipeline, step


@step
def load(n: int) -> list[int]:
    print(f"loading {n} numbers")
    return list(range(n))


@step
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@step
def total(xs: list[int]) -> int:
    return sum(xs)


@step
def lonely() -> str:
    print("nobody depends on me")
    return "alone"


@step
def boom(x: int) -> int:
    print("about to fail")
    raise ValueError("kaboom")


@step
def describe(n: int, label: str, options: dict) -> str:
    return f"{label}:{n}:{sorted(options)}"


@pipeline
def static_flow(n: int = 3) -> None:
    total(load(n))
    lonely()


@pipeline(dynamic=True, budget=Budget(max_steps=50))
def dynamic_flow(n: int = 3) -> None:
    data = load(n)
    squares = [square(data.chunk(i)) for i in range(len(data.load()))]
    total(squares)


@pipeline(dynamic=True)
def failing_flow(n: int = 2) -> None:
    boom(n)


@pipeline(dynamic=True)
def parent_flow() -> None:
    dynamic_flow(2)
    dynamic_flow.submit(1).wait()


@pipeline(dynamic=True)
def typed_flow(n: int, label: str, options: dict) -> None:
    describe(n, label, options)


def not_a_pipeline() -> None:
    pass
'''


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    path = tmp_path / "flows.py"
    path.write_text(FLOWS)
    return path


runner = CliRunner()


def cli(*args: str, code: int = 0) -> object:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def run_flow(flows: Path, name: str, *params: str, code: int = 0) -> object:
    """Run ``flows.py:name`` through the CLI and return the stored run."""
    args = ["run", f"{flows}:{name}"]
    for p in params:
        args += ["--param", p]
    cli(*args, code=code)
    return Client().list_pipeline_runs(pipeline_name=name, limit=1)[0]


# -- run --------------------------------------------------------------------------------------------

def test_run_executes_the_pipeline_and_records_it(flows: Path) -> None:
    run = run_flow(flows, "static_flow", "n=4")
    assert run.status == ExecutionStatus.COMPLETED
    assert run.parameters == {"n": 4}
    assert list(run.steps) == ["load", "total", "lonely"]
    assert run.steps["total"].output.load() == 6


def test_param_values_are_json_when_they_parse_else_strings(flows: Path) -> None:
    run = run_flow(flows, "typed_flow", "n=2", "label=hello world", 'options={"a": [1, 2]}')
    assert run.parameters == {"n": 2, "label": "hello world", "options": {"a": [1, 2]}}
    assert run.steps["describe"].output.load() == "hello world:2:['a']"


def test_a_failed_run_exits_1_and_says_how_to_see_its_logs(flows: Path) -> None:
    result = cli("run", f"{flows}:failing_flow", code=1)
    run = Client().list_pipeline_runs(pipeline_name="failing_flow")[0]
    assert run.status == ExecutionStatus.FAILED
    assert run.failed_steps == ["boom"]
    assert "kaboom" in result.stderr
    assert f"unspool logs {run.id} boom" in result.stderr
    assert "Traceback" not in result.output


def test_the_pipeline_name_may_be_left_out_only_when_the_file_has_one(tmp_path: Path) -> None:
    single = tmp_path / "single.py"
    single.write_text(
        "from unspool import pipeline, step\n\n"
        "@step\ndef one() -> int:\n    return 1\n\n"
        "@pipeline\ndef only() -> None:\n    one()\n"
    )
    cli("run", single)
    assert [r.pipeline_name for r in Client().list_pipeline_runs()] == ["only"]


def test_config_path_is_passed_to_the_pipeline(flows: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("enable_cache: true\n")
    cli("run", f"{flows}:static_flow", "--config", config)
    run = Client().list_pipeline_runs(pipeline_name="static_flow")[0]
    assert run.config["config_path"] == str(config.resolve())


# -- runs list / show -----------------------------------------------------------------------------

def test_runs_list_shows_runs_newest_first_with_filters(flows: Path) -> None:
    static = run_flow(flows, "static_flow")
    dynamic = run_flow(flows, "dynamic_flow")
    failed = run_flow(flows, "failing_flow", code=1)

    lines = cli("runs", "list").stdout.splitlines()
    assert lines[0].split() == ["id", "name", "pipeline", "status", "steps", "start", "duration"]
    assert [line.split()[0] for line in lines[1:]] == [failed.id[:8], dynamic.id[:8], static.id[:8]]
    assert "dynamic_flow" in lines[2] and "completed" in lines[2] and " 5 " in lines[2]
    assert "1 (1 failed)" in lines[1]

    only_static = cli("runs", "list", "--pipeline", "static_flow").stdout
    assert static.id[:8] in only_static and dynamic.id[:8] not in only_static
    only_failed = cli("runs", "list", "--status", "failed").stdout
    assert failed.id[:8] in only_failed and static.id[:8] not in only_failed
    assert len(cli("runs", "list", "--limit", "1").stdout.splitlines()) == 2
    assert "no runs match" in cli("runs", "list", "--pipeline", "nope").stdout


def test_runs_show_prints_the_header_and_every_step(flows: Path) -> None:
    run = run_flow(flows, "dynamic_flow", "n=2")
    out = cli("runs", "show", run.id[:8]).stdout
    for text in (run.id, run.name, "dynamic_flow (dynamic)", "completed", '{"n": 2}', "budget"):
        assert text in out
    assert "steps 4/50" in out  # budget use recorded in run.metadata
    step_lines = {line.split()[0]: line.split() for line in out.splitlines()[-4:]}
    assert set(step_lines) == set(run.steps) == {"load", "square", "square_2", "total"}
    assert step_lines["square_2"][1:3] == ["square", "completed"]
    assert step_lines["square_2"][4:] == ["no", "inline", "1"]


def test_runs_show_limits_the_step_table_but_counts_every_step(flows: Path) -> None:
    run = run_flow(flows, "dynamic_flow", "n=4")
    assert len(run.steps) == 6
    out = cli("runs", "show", run.id, "--limit", "2").stdout
    assert "6 steps (6 completed)" in out
    assert "… 4 more steps (--page 2 shows the next 2; --limit 0 shows all)" in out
    assert "square_2" not in out
    assert "square_2" in cli("runs", "show", run.id, "--limit", "0").stdout


def test_runs_show_pages_through_the_steps_in_invocation_order(flows: Path) -> None:
    run = run_flow(flows, "dynamic_flow", "n=4")
    order = list(run.steps)
    seen = []
    for page in (1, 2, 3):
        out = cli("runs", "show", run.id, "--limit", "2", "--page", str(page)).stdout
        assert f"6 steps (6 completed), steps {2 * page - 1}-{2 * page}" in out
        seen += [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in order]
    assert seen == order
    assert "… 2 more steps (--page 3" in cli("runs", "show", run.id, "-n", "2", "-p", "2").stdout
    assert "page 4 is past the last" in cli("runs", "show", run.id, "--limit", "2", "--page", "4").stdout


def test_runs_show_names_the_original_of_a_cached_step(flows: Path) -> None:
    first = run_flow(flows, "static_flow")
    second = run_flow(flows, "static_flow")
    assert {s.status for s in second.steps.values()} == {ExecutionStatus.CACHED}
    assert second.steps["load"].original_step_run_id == first.steps["load"].id
    out = cli("runs", "show", second.id).stdout
    assert f"yes, from {first.name} / load" in out


def test_runs_show_lists_failed_steps_with_their_error(flows: Path) -> None:
    run = run_flow(flows, "failing_flow", code=1)
    out = cli("runs", "show", run.name).stdout
    assert run.error is not None and "kaboom" in run.error["message"]
    assert "✗ boom: ValueError: kaboom" in out


def test_runs_show_draws_child_runs_as_a_tree(flows: Path) -> None:
    run = run_flow(flows, "parent_flow")
    children = run.child_runs
    assert len(children) == 2 and all(c.status == ExecutionStatus.COMPLETED for c in children)
    out = cli("runs", "show", run.id).stdout
    assert "child runs" in out
    for child in children:
        line = next(line for line in out.splitlines() if child.id[:8] in line)
        assert child.name in line and "completed" in line
        assert line.lstrip().startswith(("├──", "└──"))


# -- runs dag -------------------------------------------------------------------------------------

def test_runs_dag_of_a_dynamic_run_comes_from_step_upstreams(flows: Path) -> None:
    run = run_flow(flows, "dynamic_flow", "n=2")
    stored = {(up, s.invocation_id) for s in run.steps.values() for up in s.upstream}
    assert stored == {("load", "square"), ("load", "square_2"), ("square", "total"), ("square_2", "total")}

    text = cli("runs", "dag", run.id, "--format", "text").stdout
    assert {tuple(line.split(" -> ")) for line in text.splitlines()} == stored

    mermaid = cli("runs", "dag", run.id, "--format", "mermaid").stdout
    lines = [line.strip() for line in mermaid.splitlines()]
    assert lines[0] == "graph TD"
    for up, down in stored:
        assert f"s_{up} --> s_{down}" in lines
    assert 's_square_2["square_2<br/>completed"]:::completed' in lines
    assert any(line.startswith("classDef completed ") for line in lines)

    both = cli("runs", "dag", run.id).stdout
    assert "load -> square" in both and "graph TD" in both


def test_runs_dag_of_a_static_run_is_the_stored_dag(flows: Path) -> None:
    run = run_flow(flows, "static_flow")
    assert run.dag is not None
    assert [tuple(e) for e in run.dag["edges"]] == [("load", "total")]
    text = cli("runs", "dag", run.id, "-f", "text").stdout.splitlines()
    assert text == ["load -> total", "lonely"]  # an isolated node stands on its own line


def test_runs_dag_styles_nodes_by_status(flows: Path) -> None:
    run = run_flow(flows, "failing_flow", code=1)
    mermaid = cli("runs", "dag", run.id, "-f", "mermaid").stdout
    assert run.steps["boom"].status == ExecutionStatus.FAILED
    assert 's_boom["boom<br/>failed"]:::failed' in mermaid
    assert "classDef failed " in mermaid


# -- logs -----------------------------------------------------------------------------------------

def test_logs_of_one_step_by_invocation_id(flows: Path) -> None:
    run = run_flow(flows, "dynamic_flow", "n=3")
    assert "squaring 1" in run.steps["square_2"].logs
    out = cli("logs", run.id, "square_2").stdout
    assert out == "squaring 1\n"


def test_logs_by_step_name_or_for_all_steps_have_headers(flows: Path) -> None:
    run = run_flow(flows, "dynamic_flow", "n=2")
    by_name = cli("logs", run.id, "square").stdout
    assert "==> square (completed) <==\nsquaring 0" in by_name
    assert "==> square_2 (completed) <==\nsquaring 1" in by_name
    assert "loading" not in by_name

    everything = cli("logs", run.id).stdout
    assert "==> load (completed) <==\nloading 2 numbers" in everything
    assert "==> total (completed) <==\n(no output captured)" in everything


def test_logs_of_a_failed_step(flows: Path) -> None:
    run = run_flow(flows, "failing_flow", code=1)
    assert "about to fail" in cli("logs", run.id, "boom").stdout


# -- artifacts ------------------------------------------------------------------------------------

def test_artifacts_list_shows_names_and_versions(flows: Path) -> None:
    run_flow(flows, "static_flow", "n=3")
    run_flow(flows, "static_flow", "n=4")
    stored = {a["name"]: a for a in Client().list_artifacts()}
    name = next(n for n in stored if n.endswith("total::output"))
    assert stored[name]["versions"] == 2

    out = cli("artifacts", "list").stdout
    line = next(line for line in out.splitlines() if line.startswith(name + " "))
    assert line.split()[1:3] == ["2", "2"]

    versions = cli("artifacts", "list", "--name", name).stdout.splitlines()
    assert [line.split()[0] for line in versions[1:]] == ["2", "1"]
    assert all(" int " in line for line in versions[1:])


def test_artifacts_show_prints_fields_lineage_and_a_preview(flows: Path) -> None:
    run = run_flow(flows, "static_flow", "n=4")
    loaded = run.steps["load"].output
    out = cli("artifacts", "show", f"{loaded.name}:{loaded.version}").stdout
    fields = dict(
        (line.split(None, 1) + [""])[:2] for line in out.splitlines() if line and not line.startswith(" ")
    )
    assert fields["artifact"].strip() == f"{loaded.name}:1"
    assert fields["uri"].strip() == loaded.uri
    assert fields["hash"].strip() == loaded.content_hash
    assert fields["materializer"].strip() == loaded.materializer
    assert fields["producer"].startswith(f"load (completed) in run {run.name}")
    assert [c.invocation_id for c in loaded.consumers] == ["total"]
    assert fields["consumers"].startswith(f"total (completed) in run {run.name}")
    assert fields["value"].strip() == "[0, 1, 2, 3]"

    latest = cli("artifacts", "show", loaded.name, "--no-preview").stdout
    assert loaded.uri in latest and "value" not in latest


def test_artifacts_show_truncates_a_long_preview(tmp_path: Path) -> None:
    path = tmp_path / "big.py"
    path.write_text(
        "from typing import Annotated\n"
        "from unspool import ArtifactConfig, pipeline, step\n\n"
        "@step\ndef make() -> Annotated[str, ArtifactConfig(name='big', tags=['t1'])]:\n"
        "    return 'x' * 5000\n\n"
        "@pipeline\ndef big() -> None:\n    make()\n"
    )
    cli("run", f"{path}:big")
    assert Client().get_artifact_version("big").tags == ["t1"]
    out = cli("artifacts", "show", "big").stdout
    assert "characters)" in out and "x" * 5000 not in out
    assert "t1" in out


# -- init -----------------------------------------------------------------------------------------

def test_init_creates_the_home_and_says_where(home: Path) -> None:
    assert not home.exists()
    out = cli("init").stdout
    assert f"created unspool home at {home}" in out
    assert (home / "unspool.db").is_file() and (home / "artifacts").is_dir()
    assert "found existing" in cli("init").stdout


def test_init_without_unspool_home_uses_the_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "src" / "pkg").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.delenv("UNSPOOL_HOME")
    monkeypatch.chdir(project / "src" / "pkg")
    out = cli("init").stdout
    assert (project / ".unspool" / "unspool.db").is_file()
    assert str(project / ".unspool") in out


# -- errors ---------------------------------------------------------------------------------------

def _one_error_line(result: object) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "show", "no-such-run"],
        ["runs", "dag", "no-such-run"],
        ["logs", "no-such-run"],
        ["runs", "resume", "no-such-run"],
    ],
)
def test_an_unknown_run_is_one_red_line_and_exit_2(args: list[str]) -> None:
    line = _one_error_line(cli(*args, code=2))
    assert "no pipeline run with id or name 'no-such-run'" in line


def test_bad_run_targets_are_one_line_each(flows: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    cases = {
        f"{tmp_path}/missing.py:flow": "not found",
        f"{flows}:nope": "has no 'nope'; pipelines defined there: dynamic_flow, failing_flow",
        f"{flows}:not_a_pipeline": "is a function, not an unspool pipeline; decorate it with @pipeline",
        f"{flows}:square": "is a Step, not an unspool pipeline",
        f"{flows}": "name the pipeline to run",
        f"{broken}:x": "importing",
    }
    for target, expected in cases.items():
        assert expected in _one_error_line(cli("run", target, code=2)), target
    assert Client().list_pipeline_runs() == []


def test_bad_params_are_one_line_and_nothing_runs(flows: Path) -> None:
    assert "KEY=VALUE" in _one_error_line(cli("run", f"{flows}:static_flow", "-p", "novalue", code=2))
    assert "unexpected keyword argument 'zz'" in _one_error_line(
        cli("run", f"{flows}:static_flow", "-p", "zz=1", code=2)
    )
    assert Client().list_pipeline_runs() == []


def test_other_lookups_fail_with_one_line(flows: Path) -> None:
    run = run_flow(flows, "static_flow")
    assert "has no step 'nope'; its steps are: load, total, lonely" in _one_error_line(
        cli("logs", run.id, "nope", code=2)
    )
    assert "no artifact named 'nope'" in _one_error_line(cli("artifacts", "show", "nope", code=2))
    assert "no version 9 of artifact" in _one_error_line(
        cli("artifacts", "show", f"{run.steps['load'].output.name}:9", code=2)
    )
    assert "no artifact named 'nope'" in _one_error_line(cli("artifacts", "list", "--name", "nope", code=2))
    assert "config file" in _one_error_line(cli("run", f"{flows}:static_flow", "-c", "nope.yaml", code=2))


def test_a_repeated_run_name_is_one_line_and_the_store_stays_usable(flows: Path, tmp_path: Path) -> None:
    config = tmp_path / "named.yaml"
    config.write_text("run_name: nightly\n")
    cli("run", f"{flows}:static_flow", "--config", config)
    line = _one_error_line(cli("run", f"{flows}:static_flow", "--config", config, code=2))
    assert "a run named 'nightly' already exists" in line
    run_flow(flows, "static_flow")  # later runs in the same process still flush
    assert [r.name for r in Client().list_pipeline_runs()][1:] == ["nightly"]


def test_debug_reraises_with_the_traceback() -> None:
    result = runner.invoke(app, ["--debug", "runs", "show", "no-such-run"])
    assert result.exit_code != 0
    assert isinstance(result.exception, NotFoundError)


# -- resume ---------------------------------------------------------------------------------------

def test_runs_resume_finishes_a_failed_run_as_the_same_run(tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    path = tmp_path / "flaky.py"
    path.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from unspool import pipeline, step

        @step
        def first() -> int:
            return 1

        @step
        def second(x: int) -> int:
            if not Path({str(flag)!r}).exists():
                raise RuntimeError("not yet")
            return x + 1

        @pipeline(dynamic=True)
        def flaky() -> None:
            second(first())
    """))
    cli("run", f"{path}:flaky", code=1)
    run = Client().list_pipeline_runs(pipeline_name="flaky")[0]
    assert run.status == ExecutionStatus.FAILED
    flag.touch()
    cli("runs", "resume", run.id[:8])
    resumed = Client().get_pipeline_run(run.id)
    assert resumed.status == ExecutionStatus.COMPLETED
    assert resumed.steps["second"].output.load() == 2
    assert len(Client().list_pipeline_runs(pipeline_name="flaky")) == 1


# -- a real process -------------------------------------------------------------------------------

def _unspool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unspool", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )


def test_python_dash_m_unspool_end_to_end(flows: Path, home: Path) -> None:
    done = _unspool("run", "flows.py:dynamic_flow", "--param", "n=2", cwd=flows.parent)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr

    run = Client().list_pipeline_runs(pipeline_name="dynamic_flow")[0]
    assert run.status == ExecutionStatus.COMPLETED and run.parameters == {"n": 2}
    assert (home / "unspool.db").is_file()

    listed = _unspool("runs", "list", cwd=flows.parent)
    assert listed.returncode == 0 and run.id[:8] in listed.stdout
    shown = _unspool("runs", "show", run.id[:8], cwd=flows.parent)
    assert shown.returncode == 0 and "square_2" in shown.stdout
    dag = _unspool("runs", "dag", run.id, "--format", "text", cwd=flows.parent)
    assert "load -> square_2" in dag.stdout.splitlines()
    logs = _unspool("logs", run.id, "load", cwd=flows.parent)
    assert logs.stdout == "loading 2 numbers\n"

    failed = _unspool("run", "flows.py:failing_flow", cwd=flows.parent)
    assert failed.returncode == 1
    assert Client().list_pipeline_runs(pipeline_name="failing_flow")[0].status == ExecutionStatus.FAILED

    missing = _unspool("runs", "show", "deadbeef", cwd=flows.parent)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("error: no pipeline run with id or name 'deadbeef'")

    assert _unspool("--help", cwd=flows.parent).returncode == 0


def test_loading_a_file_without_a_main_guard_never_starts_a_run(tmp_path: Path, home: Path) -> None:
    """The README's first example calls its pipeline at module level: commands that load the
    file to find the pipeline must not run that call too."""
    effects = tmp_path / "effects.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from unspool import pipeline, step

        @step(enable_cache=False)
        def touch(tag: str) -> str:
            with open({str(effects)!r}, "a") as f:
                f.write(tag + "\\n")
            return tag

        @pipeline(dynamic=True)
        def unguarded(tag: str = "module-level") -> None:
            touch(tag)

        unguarded()
    """))
    env_home = {"UNSPOOL_HOME": str(home)}
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **env_home})
    assert plain.returncode == 0, plain.stderr  # run as a script, the call runs: one run
    assert effects.read_text().split() == ["module-level"]

    done = _unspool("run", f"{script}:unguarded", "--param", "tag=cli", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert effects.read_text().split() == ["module-level", "cli"]
    [cli_run] = Client().list_pipeline_runs(limit=1)
    assert cli_run.parameters == {"tag": "cli"}

    done = _unspool("runs", "resume", cli_run.id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = _unspool("snapshots", "create", f"{script}:unguarded", "--name", "unguarded-snap", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = _unspool("snapshots", "trigger", "unguarded-snap", "--param", "tag=trigger", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    assert effects.read_text().split() == ["module-level", "cli", "trigger"]
    runs = Client().list_pipeline_runs(pipeline_name="unguarded")
    assert sorted(r.parameters["tag"] for r in runs) == ["cli", "module-level", "trigger"]
    assert {r.status.value for r in runs} == {"completed"}
