"""Artifacts: every output is an atomically written, versioned, fully described artifact version."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import pytest

from unspool import (
    ArtifactConfig,
    BaseMaterializer,
    Client,
    ExecutionStatus,
    MaterializerError,
    RunFailedError,
    StepDefinitionError,
    log_metadata,
    pipeline,
    step,
)


class HalfWritingMaterializer(BaseMaterializer):
    """Writes one file, then fails: the partial artifact must never become visible."""

    def save(self, data: Any) -> None:
        self._write("part-1.bin", b"first half")
        raise RuntimeError("disk full")

    def load(self, data_type: type) -> Any:  # pragma: no cover - never saved
        raise AssertionError


def staging_dirs(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".staging-")]


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def expected_digest(path: Path) -> tuple[str, int]:
    """The documented content hash: sha256 over (relative name, NUL, sha256 of bytes) per file."""
    total = hashlib.sha256()
    size = 0
    for rel, data in files_under(path).items():
        total.update(rel.replace(os.sep, "/").encode() + b"\0" + hashlib.sha256(data).digest())
        size += len(data)
    return total.hexdigest(), size


# -- atomic writes ---------------------------------------------------------------------------------------


def test_successful_run_leaves_only_committed_artifact_directories(home: Path) -> None:
    @step
    def several() -> tuple[int, list, dict]:
        return 1, [1, 2], {"a": 1}

    @pipeline(dynamic=True)
    def writes() -> None:
        several()
        several.submit().result()

    run = writes()

    root = home / "artifacts"
    assert staging_dirs(root) == []
    for version in Client().list_artifact_versions():
        assert Path(version.uri).is_dir()
        assert Path(version.uri).is_relative_to(root / run.id)
    assert not list(root.rglob("*.tmp-*"))


def test_materializer_failing_midway_leaves_no_partial_artifact(home: Path) -> None:
    @step(output_materializers=HalfWritingMaterializer)
    def produce() -> int:
        return 1

    @step
    def ok() -> int:
        return 2

    @pipeline(dynamic=True)
    def half_written() -> None:
        ok()
        produce()

    with pytest.raises(Exception, match="produce"):
        half_written()

    [run] = Client().list_pipeline_runs()
    step_run = run.steps["produce"]
    assert step_run.status == ExecutionStatus.FAILED
    assert step_run.error["type"] == "MaterializerError"
    assert "disk full" in step_run.error["message"]
    assert "HalfWritingMaterializer" in step_run.error["message"]
    assert step_run.outputs == {}
    # Neither the staging directory nor the final directory exists; no version was recorded.
    root = home / "artifacts"
    assert staging_dirs(root) == []
    assert not (root / run.id / "produce.out-output").exists()
    assert not [p for p in root.rglob("part-1.bin")]
    assert [v.name for v in Client().list_artifact_versions()] == ["half_written::ok::output"]


# -- what every version records -----------------------------------------------------------------------------


def test_every_version_records_its_full_description(home: Path) -> None:
    @step
    def make() -> Annotated[list, ArtifactConfig(name="numbers", tags=["raw", "v1"], run_metadata={"source": "unit"})]:
        log_metadata({"rows": 3}, artifact_name="numbers")
        return [1, 2, 3]

    @pipeline(dynamic=True)
    def describe() -> None:
        make()

    before = dt.datetime.now()
    run = describe()
    after = dt.datetime.now()

    version = Client().get_artifact_version("numbers")
    producer = run.steps["make"]
    assert version.name == "numbers"
    assert version.version == 1
    assert version.uri == str(home / "artifacts" / run.id / "make.out-numbers")
    assert version.data_type == "builtins:list"
    assert version.materializer == "unspool._materializers:SequenceMaterializer"
    assert re.fullmatch(r"[0-9a-f]{64}", version.content_hash)
    assert (version.content_hash, version.size) == expected_digest(Path(version.uri))
    assert version.item_count == 3
    assert version.producer_step_run_id == producer.id
    assert version.producer_step_run.invocation_id == "make"
    assert version.run_id == run.id
    assert before - dt.timedelta(seconds=1) <= version.created <= after + dt.timedelta(seconds=1)
    assert version.tags == ["raw", "v1"]
    assert version.metadata == {"length": 3, "source": "unit", "rows": 3}
    assert version.load() == [1, 2, 3]
    # The row in the store says the same.
    with sqlite3.connect(home / "unspool.db") as conn:
        row = conn.execute(
            "SELECT name, version, uri, data_type, materializer, content_hash, size, "
            "producer_step_run_id, tags FROM artifact_versions"
        ).fetchone()
    assert row == (
        "numbers", 1, version.uri, "builtins:list", version.materializer, version.content_hash,
        version.size, producer.id, '["raw", "v1"]',
    )


def test_versions_count_up_per_name(home: Path) -> None:
    @step(enable_cache=False)
    def produce(x: int) -> Annotated[int, "counted"]:
        return x

    @step(enable_cache=False)
    def other() -> Annotated[int, "other"]:
        return 0

    @pipeline(dynamic=True)
    def versioned(n: int) -> None:
        for i in range(n):
            produce(i)
        other()

    versioned(2)
    versioned(1)

    client = Client()
    assert [v.version for v in client.list_artifact_versions("counted")] == [3, 2, 1]
    assert [v.load() for v in client.list_artifact_versions("counted")] == [0, 1, 0]
    assert client.get_artifact_version("counted").version == 3
    assert client.get_artifact_version("counted", version=1).load() == 0
    assert [v.version for v in client.list_artifact_versions("other")] == [2, 1]
    with sqlite3.connect(home / "unspool.db") as conn:
        assert conn.execute("SELECT name, latest_version FROM artifacts ORDER BY name").fetchall() == [
            ("counted", 3),
            ("other", 2),
        ]


def test_content_hash_depends_on_content_only() -> None:
    @step(enable_cache=False)
    def value(x: int) -> Annotated[dict, "blob"]:
        return {"x": x}

    @pipeline(dynamic=True)
    def hashes() -> None:
        value(1)
        value(1)
        value(2)

    run = hashes()
    a, b, c = (run.steps[i].output for i in ("value", "value_2", "value_3"))
    assert a.uri != b.uri
    assert a.content_hash == b.content_hash
    assert a.content_hash != c.content_hash
    assert a.size == len(b'{"x": 1}')


# -- artifact name placeholders -------------------------------------------------------------------------------


def test_placeholders_come_from_step_pipeline_and_run_substitutions() -> None:
    @step(substitutions={"stage": "train"})
    def from_step() -> Annotated[int, ArtifactConfig(name="{stage}_{team}_{region}")]:
        return 1

    @step
    def from_pipeline() -> Annotated[int, ArtifactConfig(name="{team}_score")]:
        return 2

    @step(substitutions={"team": "step-wins"})
    def overridden() -> Annotated[int, ArtifactConfig(name="{team}_overridden")]:
        return 3

    @pipeline(dynamic=True, substitutions={"team": "ml", "region": "eu"})
    def substituted() -> None:
        from_step()
        from_pipeline()
        overridden()

    run = substituted.with_options(substitutions={"region": "us"})()  # run-level substitution

    assert run.config["substitutions"] == {"team": "ml", "region": "us"}
    names = {i: s.output.name for i, s in run.steps.items()}
    assert names == {
        "from_step": "train_ml_us",
        "from_pipeline": "ml_score",
        "overridden": "step-wins_overridden",
    }
    assert Client().get_artifact_version("ml_score").load() == 2


def test_date_and_time_placeholders_use_the_run_start() -> None:
    @step
    def stamped() -> Annotated[int, ArtifactConfig(name="daily_{date}_{time}")]:
        return 1

    @step
    def dated() -> Annotated[int, ArtifactConfig(name="report_{date}")]:
        return 2

    @pipeline(dynamic=True)
    def timestamps() -> None:
        stamped()
        dated()

    before = dt.datetime.now()
    run = timestamps()

    stamped_name = run.steps["stamped"].output.name
    match = re.fullmatch(r"daily_(\d{4}_\d{2}_\d{2})_(\d{2}_\d{2}_\d{2}_\d{6})", stamped_name)
    assert match, stamped_name
    when = dt.datetime.strptime(f"{match[1]} {match[2]}", "%Y_%m_%d %H_%M_%S_%f")
    assert abs((when - before).total_seconds()) < 60
    assert run.steps["dated"].output.name == f"report_{match[1]}"
    assert run.name.endswith(f"{match[1]}-{match[2]}")  # the run name uses the same instant


def test_undefined_placeholder_is_a_definition_error() -> None:
    @step
    def bad() -> Annotated[int, ArtifactConfig(name="x_{nope}")]:
        return 1

    @pipeline(dynamic=True)
    def undefined() -> None:
        bad()

    with pytest.raises(StepDefinitionError, match=r"\{nope\}.*substitutions"):
        undefined()
    [run] = Client().list_pipeline_runs()
    assert run.status == ExecutionStatus.FAILED


def test_undefined_placeholder_in_a_static_pipeline_fails_at_compile_time() -> None:
    ran: list[str] = []

    @step
    def first() -> int:
        ran.append("first")
        return 1

    @step
    def second(x: int) -> Annotated[int, ArtifactConfig(name="y_{nope}")]:
        return x

    @pipeline
    def static_undefined() -> None:
        second(first())

    with pytest.raises(StepDefinitionError, match=r"'second' uses \{nope\}"):
        static_undefined()
    [run] = Client().list_pipeline_runs()
    assert run.status == ExecutionStatus.FAILED
    assert ran == []  # the DAG is checked before any step runs


@pytest.mark.timeout(20)
def test_error_while_starting_a_downstream_step_fails_it_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from unspool._dispatch import Dispatch

    real_lookup = Dispatch.lookup_cache

    def flaky_lookup(self: Dispatch, key: str, *args: Any) -> Any:
        if any(inv.cache_key == key and inv.step.name == "second" for inv in self.run.invocations.values()):
            raise OSError("metadata store unreachable")
        return real_lookup(self, key, *args)

    monkeypatch.setattr(Dispatch, "lookup_cache", flaky_lookup)

    @step
    def first() -> int:
        return 1

    @step
    def second(x: int) -> int:
        return x

    @step
    def third(x: int) -> int:
        return x

    @pipeline
    def start_failure() -> None:
        third(second(first()))

    with pytest.raises(RunFailedError, match="second"):
        start_failure()
    [run] = Client().list_pipeline_runs()
    statuses = {i: s.status.value for i, s in run.steps.items()}
    assert statuses == {"first": "completed", "second": "failed", "third": "skipped"}
    assert run.steps["second"].error["type"] == "OSError"
    assert run.steps["second"].end_time is not None


def test_unserialisable_output_is_a_materializer_error_and_no_version() -> None:
    import threading

    @step
    def locked() -> Any:
        return threading.Lock()

    @pipeline(dynamic=True)
    def unserialisable() -> None:
        locked()

    with pytest.raises(Exception, match="locked"):
        unserialisable()
    [run] = Client().list_pipeline_runs()
    error = run.steps["locked"].error
    assert error["type"] == MaterializerError.__name__
    assert "lock" in error["message"] and "cannot be serialised" in error["message"]
    assert Client().list_artifact_versions() == []


def test_metadata_json_cannot_hold_is_converted_never_fatal() -> None:
    import numpy as np

    class Unknown:
        def __repr__(self) -> str:
            return "<Unknown>"

    @step
    def measured() -> Annotated[list, "measured"]:
        log_metadata({"count": np.int64(3), "scores": np.array([0.5, 1.0]), "tags": {"b"}})
        log_metadata({"odd": Unknown()}, artifact_name="measured")
        return [1]

    @pipeline(dynamic=True)
    def with_metadata() -> None:
        measured()

    run = with_metadata()

    assert run.status == ExecutionStatus.COMPLETED
    step_run = run.steps["measured"]
    assert step_run.metadata == {"count": 3, "scores": [0.5, 1.0], "tags": ["b"]}
    assert step_run.output.metadata == {"length": 1, "odd": "<Unknown>"}
    assert len(Client().list_pipeline_runs()) == 1
