"""Snapshots: a stored, runnable reference to a pipeline, triggered as a run in another process.

``pipeline.create_snapshot(name)`` stores where the pipeline is defined and its frozen
configuration (``_snapshots.py``); ``Client().trigger_pipeline`` runs it through
``python -m unspool._trigger`` on the same stores. The metadata store gained the
``snapshots`` table and ``pipeline_runs.snapshot_id`` in schema migration 2.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from unspool import Client, ConfigError, ExecutionStatus, NotFoundError, Snapshot, UnspoolError
from unspool._cli import snapshots_app
from unspool._metadata_store import SCHEMA_VERSION, MetadataStore

FLOWS = """\
from unspool import pipeline, step

@step
def double(x: int) -> int:
    return x * 2

@step(enable_cache=False)
def wait_for(path: str) -> str:
    import os, time
    while not os.path.exists(path):  # the test releases the step once it has seen the run
        time.sleep(0.02)
    return path

@pipeline
def calc(n: int = 1) -> None:
    double(n)

@pipeline(dynamic=True, depends_on=[double])
def fan(my_param: int) -> None:
    for i in range(my_param):
        double(i)

@pipeline
def held(release: str) -> None:
    wait_for(release)

@step
def explode() -> None:
    raise RuntimeError("kaboom")

@pipeline
def broken() -> None:
    explode()
"""


def sql(home: Path, query: str, *args: object) -> list[tuple]:
    Client()  # flushes buffered writes
    with sqlite3.connect(home / "unspool.db") as conn:
        return conn.execute(query, args).fetchall()


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> ModuleType:
    """A pipeline module of a user project, imported by name (from a sys.path entry)."""
    name = f"flows_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    project = tmp_path / "project"
    project.mkdir()
    (project / f"{name}.py").write_text(FLOWS)
    monkeypatch.syspath_prepend(str(project))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


# -- creating and reading -------------------------------------------------------------------------------


def test_create_snapshot_stores_a_runnable_reference(flows: ModuleType, home: Path) -> None:
    snapshot = flows.calc.with_options(enable_cache=False, parameters={"n": 4}).create_snapshot("calc-v1")

    assert isinstance(snapshot, Snapshot)
    assert snapshot.name == "calc-v1"
    assert snapshot.pipeline_name == "calc"
    assert snapshot.source == flows.__name__  # importable: the module name
    assert snapshot.source_file == str(Path(flows.__file__).resolve())
    assert snapshot.attribute == "calc"
    assert snapshot.parameters == {"n": 4}
    assert snapshot.config["enable_cache"] is False
    assert snapshot.config["config_path"] is None
    assert snapshot.config["signature"] == {"parameters": ["n"], "required": [], "var_keyword": False}

    [row] = sql(home, "SELECT id, name, pipeline_name, source, attribute FROM snapshots")
    assert row == (snapshot.id, "calc-v1", "calc", flows.__name__, "calc")
    client = Client()
    assert client.get_snapshot("calc-v1") == snapshot
    assert client.get_snapshot(snapshot.id) == snapshot
    assert client.get_snapshot(snapshot.id[:8]) == snapshot  # a unique id prefix
    assert client.list_snapshots() == [snapshot]


def test_list_snapshots_is_newest_first_and_filters_by_pipeline(flows: ModuleType) -> None:
    a = flows.calc.create_snapshot("a")
    b = flows.fan.create_snapshot("b")
    c = flows.calc.create_snapshot("c")
    client = Client()
    assert [s.name for s in client.list_snapshots()] == [c.name, b.name, a.name]
    assert [s.name for s in client.list_snapshots("calc")] == ["c", "a"]


def test_snapshot_names_are_unique(flows: ModuleType) -> None:
    first = flows.calc.create_snapshot("nightly")
    with pytest.raises(UnspoolError) as info:
        flows.fan.create_snapshot("nightly")
    assert f"a snapshot named 'nightly' already exists (id {first.id}, pipeline 'calc'" in str(info.value)
    assert "pick another name" in str(info.value)
    assert len(Client().list_snapshots()) == 1


def test_unknown_snapshot_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="no snapshot with id or name 'missing'; `unspool snapshots list`"):
        Client().get_snapshot("missing")
    with pytest.raises(NotFoundError, match="no snapshot with id or name 'missing'"):
        Client().trigger_pipeline("missing")


def test_a_pipeline_that_is_not_module_level_cannot_be_snapshotted() -> None:
    from unspool import PipelineError, pipeline, step

    @step
    def s() -> None:
        pass

    @pipeline
    def local_only() -> None:
        s()

    with pytest.raises(PipelineError, match="is not a module-level name"):
        local_only.create_snapshot("nope")


# -- triggering ------------------------------------------------------------------------------------------


def test_trigger_runs_the_snapshot_in_a_separate_process(flows: ModuleType, home: Path) -> None:
    snapshot = flows.fan.create_snapshot("fan-snap")
    run = Client().trigger_pipeline(snapshot_id=snapshot.id, run_configuration={"parameters": {"my_param": 3}})

    assert run.status == ExecutionStatus.COMPLETED
    assert run.pipeline_name == "fan"
    assert run.parameters == {"my_param": 3}
    assert list(run.steps) == ["double", "double_2", "double_3"]
    assert [s.output.load() for s in run.steps.values()] == [0, 2, 4]
    assert run.snapshot_id == snapshot.id
    assert run.orchestrator is not None and not run.orchestrator.endswith(f":{os.getpid()}")
    assert sql(home, "SELECT snapshot_id, status FROM pipeline_runs WHERE id = ?", run.id) == [
        (snapshot.id, "completed")
    ]


def test_trigger_by_name_applies_the_frozen_configuration(flows: ModuleType, tmp_path: Path) -> None:
    config = tmp_path / "calc.yaml"
    config.write_text("parameters: {n: 5}\nenable_cache: false\nsettings: {team: a}\n")
    snapshot = flows.calc.with_options(config_path=str(config)).create_snapshot("calc-from-file")
    assert snapshot.config["config_path"] == str(config.resolve())
    config.unlink()  # the snapshot keeps the configuration, not a reference to the file

    run = Client().trigger_pipeline("calc-from-file")
    assert run.status == ExecutionStatus.COMPLETED
    assert run.parameters == {"n": 5}
    assert run.steps["double"].output.load() == 10
    assert run.config["config_path"] == str(config.resolve())
    assert run.config["enable_cache"] is False
    assert run.config["settings"] == {"team": "a"}

    # run-configuration parameters win over the snapshot's, other keys layer on top
    run = Client().trigger_pipeline(
        "calc-from-file", run_configuration={"parameters": {"n": 6}, "settings": {"extra": 1}}
    )
    assert run.parameters == {"n": 6}
    assert run.config["settings"] == {"team": "a", "extra": 1}


def test_trigger_without_waiting_returns_once_the_run_exists(flows: ModuleType, tmp_path: Path) -> None:
    flows.held.create_snapshot("held")
    release = tmp_path / "release"
    # The run's only step waits for `release`, so returning at all means trigger did not wait for it.
    run = Client().trigger_pipeline("held", run_configuration={"parameters": {"release": str(release)}}, wait=False)
    assert Client().get_pipeline_run(run.id).status in (ExecutionStatus.INITIALIZING, ExecutionStatus.RUNNING)
    release.touch()
    deadline = time.monotonic() + 120  # only turns a hang into a failure
    while not Client().get_pipeline_run(run.id).status.is_finished:
        assert time.monotonic() < deadline, "the triggered run never finished"
        time.sleep(0.05)
    finished = Client().get_pipeline_run(run.id)
    assert finished.status == ExecutionStatus.COMPLETED
    assert finished.steps["wait_for"].output.load() == str(release)


def test_trigger_rejects_parameters_the_pipeline_does_not_accept(flows: ModuleType) -> None:
    flows.fan.create_snapshot("fan")
    client = Client()
    with pytest.raises(ConfigError) as info:
        client.trigger_pipeline("fan", run_configuration={"parameters": {"my_param": 1, "other": 2}})
    assert str(info.value) == (
        "configuration: run_configuration.parameters.other: pipeline 'fan' of snapshot 'fan' has no "
        "parameter 'other'; expected one of: my_param"
    )
    with pytest.raises(ConfigError, match=r"needs parameter\(s\) \['my_param'\]"):
        client.trigger_pipeline("fan")
    with pytest.raises(ConfigError, match=r"run_configuration\.paramters: unknown key; expected one of: parameters"):
        client.trigger_pipeline("fan", run_configuration={"paramters": {"my_param": 1}})
    with pytest.raises(ConfigError, match=r"run_configuration\.steps\.nope: step 'nope' is not in depends_on"):
        client.trigger_pipeline("fan", run_configuration={"parameters": {"my_param": 1}, "steps": {"nope": {}}})
    assert client.list_pipeline_runs() == []  # no run was started


def test_errors_of_the_new_process_are_raised_in_the_caller(flows: ModuleType) -> None:
    snapshot = flows.calc.create_snapshot("calc")
    # the code changed since the snapshot: `n` is gone, so the recorded signature is stale
    Path(snapshot.source_file).write_text(FLOWS.replace("def calc(n: int = 1) -> None:\n    double(n)", "def calc() -> None:\n    double(1)"))
    with pytest.raises(ConfigError, match=r"run_configuration\.parameters\.n: pipeline 'calc' has no parameter 'n'"):
        Client().trigger_pipeline("calc", run_configuration={"parameters": {"n": 2}})
    assert Client().list_pipeline_runs() == []


def test_a_failed_triggered_run_is_returned_with_its_status(flows: ModuleType) -> None:
    flows.broken.create_snapshot("broken")
    run = Client().trigger_pipeline("broken")
    assert run.status == ExecutionStatus.FAILED
    assert run.steps["explode"].status == ExecutionStatus.FAILED
    assert "kaboom" in run.steps["explode"].error["message"]


def test_snapshot_of_a_script_pipeline_is_loaded_from_its_file(tmp_path: Path, home: Path) -> None:
    script = tmp_path / "script_flow.py"
    script.write_text(
        FLOWS + textwrap.dedent(
            """
            if __name__ == "__main__":
                print(calc.create_snapshot("from-script").id)
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    snapshot = Client().get_snapshot("from-script")
    assert snapshot.id == done.stdout.strip()
    assert snapshot.source == str(script.resolve())  # __main__ is not importable: the file
    run = Client().trigger_pipeline("from-script", run_configuration={"parameters": {"n": 21}})
    assert run.steps["double"].output.load() == 42


# -- the CLI -------------------------------------------------------------------------------------------------


def test_cli_create_list_trigger(tmp_path: Path) -> None:
    flow = tmp_path / "cli_flow.py"
    flow.write_text(FLOWS)
    config = tmp_path / "c.yaml"
    config.write_text("parameters: {n: 2}\n")
    runner = CliRunner()

    result = runner.invoke(snapshots_app, ["create", f"{flow}:calc", "--name", "cli-calc", "--config", str(config)])
    assert result.exit_code == 0, result.output
    snapshot = Client().get_snapshot("cli-calc")
    assert f"snapshot cli-calc ({snapshot.id}) of pipeline calc" in result.output
    assert snapshot.source == str(flow.resolve())
    assert snapshot.parameters == {"n": 2}

    result = runner.invoke(snapshots_app, ["list"])
    assert result.exit_code == 0, result.output
    assert "cli-calc" in result.output and snapshot.id in result.output and '{"n": 2}' in result.output

    result = runner.invoke(snapshots_app, ["trigger", "cli-calc", "--param", "n=8"])
    assert result.exit_code == 0, result.output
    [run] = Client().list_pipeline_runs("calc")
    assert f"run {run.name} ({run.id}): completed" in result.output
    assert run.parameters == {"n": 8}
    assert run.snapshot_id == snapshot.id

    result = runner.invoke(snapshots_app, ["trigger", "cli-calc", "--param", "zz=1"])
    assert result.exit_code == 2
    assert "run_configuration.parameters.zz: pipeline 'calc' of snapshot 'cli-calc' has no parameter 'zz'" in result.output

    result = runner.invoke(snapshots_app, ["create", f"{flow}:calc", "--name", "cli-calc"])
    assert result.exit_code == 2
    assert "a snapshot named 'cli-calc' already exists" in result.output


# -- schema migration ------------------------------------------------------------------------------------------


def test_a_version_1_store_is_upgraded_in_place(home: Path) -> None:
    from unspool.testing import reset_stores

    Client()  # creates the store at the current version
    reset_stores()
    db = home / "unspool.db"
    with sqlite3.connect(db) as conn:  # turn it back into a version-1 store holding one run
        conn.execute("DROP TABLE snapshots")
        conn.execute("ALTER TABLE pipeline_runs DROP COLUMN snapshot_id")
        conn.execute("DELETE FROM schema_version WHERE version > 1")
        conn.execute(
            "INSERT INTO pipeline_runs (id, name, pipeline_name, status, dynamic, parameters, config, "
            "run_metadata, created_at) VALUES ('r1', 'old-run', 'old', 'completed', 0, '{}', '{}', '{}', 1.0)"
        )
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'snapshots'").fetchall() == []
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)

    store = MetadataStore(f"sqlite:///{db}")  # opening upgrades it
    store.close()

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")][:2] == [1, 2]
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'snapshots'").fetchall() == [("snapshots",)]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(pipeline_runs)")]
        assert "snapshot_id" in columns
    old = Client().get_pipeline_run("old-run")
    assert old.id == "r1" and old.snapshot_id is None
    assert Client().list_snapshots() == []
