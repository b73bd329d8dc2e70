"""ZenML options and APIs a user's code may use: accepted, recorded, and working where they
can mean something locally (issue 12, item 14)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest

from unspool import (
    Client,
    Model,
    NotFoundError,
    get_pipeline_context,
    get_step_context,
    load_artifact,
    log_metadata,
    pipeline,
    register_artifact,
    save_artifact,
    step,
)


@step(enable_cache=False)
def produce(x: int) -> Annotated[int, "number"]:
    log_metadata({"quality": 0.9}, infer_artifact=True)
    log_metadata({"phase": "produce"})
    return x


def test_pipeline_options_from_the_zenml_docs_are_accepted_and_recorded() -> None:
    seen = {}

    @pipeline(dynamic=True, tags=["nightly", "team-a"], enable_step_logs=True,
              environment={"MY_ENV": "1"}, extra={"owner": "me"}, model=Model(name="clf", version="v1"))
    def configured() -> None:
        ctx = get_pipeline_context()
        seen.update(name=ctx.name, extra=ctx.extra, model=ctx.model.name, run_name=ctx.run_name)
        produce(1)

    run = configured()
    assert run.status.value == "completed"
    assert run.config["tags"] == ["nightly", "team-a"]
    assert run.config["extra"] == {"owner": "me"}
    assert run.config["environment"] == {"MY_ENV": "1"}
    assert run.config["model"]["name"] == "clf" and run.config["model"]["version"] == "v1"
    assert run.tags == ["nightly", "team-a"]
    assert seen == {"name": "configured", "extra": {"owner": "me"}, "model": "clf", "run_name": run.name}


def test_pipeline_environment_is_set_while_the_run_executes(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv("UNSPOOL_TEST_ENV", raising=False)

    @step(enable_cache=False)
    def reads_env() -> str:
        return os.environ.get("UNSPOOL_TEST_ENV", "unset")

    @pipeline(dynamic=True, environment={"UNSPOOL_TEST_ENV": "from-pipeline"})
    def with_env() -> None:
        reads_env()
        reads_env.with_options(runtime="isolated")()

    run = with_env()
    assert [s.output.load() for s in run.steps.values()] == ["from-pipeline", "from-pipeline"]
    assert "UNSPOOL_TEST_ENV" not in os.environ


def test_log_metadata_infers_the_artifact_and_reaches_a_step_from_outside() -> None:
    @pipeline(dynamic=True)
    def p() -> None:
        produce(2)

    run = p()
    step_run = run.steps["produce"]
    assert step_run.metadata["phase"] == "produce"
    assert step_run.output.metadata["quality"] == 0.9
    log_metadata({"reviewed": True}, step_name="produce", run_id_name_or_prefix=run.id)
    assert Client().get_pipeline_run(run.id).steps["produce"].metadata["reviewed"] is True


def test_step_context_knows_its_pipeline_run_and_step_run() -> None:
    @step
    def introspect() -> str:
        ctx = get_step_context()
        return f"{ctx.pipeline_run.name}|{ctx.pipeline_run.id}|{ctx.step_run.name}|{ctx.step_run.id}"

    @pipeline(dynamic=True)
    def p() -> None:
        introspect()

    run = p()
    step_run = run.steps["introspect"]
    assert step_run.output.load() == f"{run.name}|{run.id}|introspect|{step_run.id}"


def test_artifacts_made_outside_steps_are_saved_loaded_and_registered(tmp_path: Path) -> None:
    version = save_artifact({"a": 1}, name="external_config")
    assert version.version == 1 and version.load() == {"a": 1}
    save_artifact({"a": 2}, name="external_config", tags=["v2"])
    assert load_artifact("external_config") == {"a": 2}
    assert load_artifact("external_config", version=1) == {"a": 1}

    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "rows.csv").write_text("1,2\n")
    registered = register_artifact(str(folder), name="raw_dataset")
    assert Path(registered.load()) == folder and registered.uri == str(folder)

    @step
    def count_rows(config: dict) -> int:
        return config["a"]

    @pipeline(dynamic=True)
    def uses_external() -> None:
        count_rows(Client().get_artifact_version("external_config"))

    run = uses_external()
    assert run.steps["count_rows"].output.load() == 2


def test_client_pipelines_artifacts_sorting_paging_and_deleting_runs() -> None:
    @step
    def shared() -> int:
        return 7

    @step(enable_cache=False)
    def own(x: int) -> int:
        return x

    @pipeline(dynamic=True)
    def listed(x: int) -> None:
        shared()  # cached after the first run: later runs use the first run's artifact
        own(x)

    runs = [listed(i) for i in range(3)]
    assert Client().get_pipeline("listed").name == "listed"
    with pytest.raises(NotFoundError):
        Client().get_pipeline("nope")
    oldest_first = Client().list_pipeline_runs(pipeline_name="listed", sort_by="asc:created")
    assert [r.id for r in oldest_first] == [r.id for r in runs]
    page = Client().list_pipeline_runs(pipeline_name="listed", sort_by="asc:created", page=2, size=2)
    assert [r.id for r in page] == [runs[2].id]
    artifact = Client().get_artifact(runs[0].steps["own"].output.name)
    assert [v.version for v in artifact.versions] == [1, 2, 3]

    first = runs[0]
    shared_uri = first.steps["shared"].output.uri
    own_uri = first.steps["own"].output.uri
    Client().delete_pipeline_run(first.id)
    with pytest.raises(NotFoundError):
        Client().get_pipeline_run(first.id)
    assert Path(shared_uri).exists()  # later runs' cached steps still use it
    assert not Path(own_uri).exists()
    assert runs[1].steps["shared"].output.load() == 7
