"""Where the stores live, and what the metadata store is made of.

``UNSPOOL_HOME`` holds ``unspool.db`` and ``artifacts/``; without it ``.unspool/`` is found
upwards from the working directory like git finds ``.git`` (or created at the project root);
``UNSPOOL_STORE_URL`` and ``UNSPOOL_ARTIFACT_STORE`` override each part.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from unspool import Client, ExecutionStatus, pipeline, step
from unspool._metadata_store import SCHEMA_VERSION
from unspool._settings import find_home


@step
def answer() -> int:
    return 42


@pipeline(dynamic=True)
def located() -> None:
    answer()


def stored_in(db: Path, artifacts: Path, run_id: str) -> None:
    """The run is in the SQLite file ``db`` and its artifact under ``artifacts``."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM pipeline_runs WHERE id = ?", (run_id,)).fetchall() == [
            ("completed",)
        ]
        [(uri,)] = conn.execute("SELECT uri FROM artifact_versions WHERE run_id = ?", (run_id,)).fetchall()
    assert Path(uri).is_relative_to(artifacts)
    assert (Path(uri) / "data.json").read_text() == "42"


def test_unspool_home_holds_both_stores(home: Path) -> None:
    run = located()
    stored_in(home / "unspool.db", home / "artifacts", run.id)
    assert Client().artifact_root == str(home / "artifacts")


@pytest.fixture
def no_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSPOOL_HOME")
    stray = [d / ".unspool" for d in Path("/tmp").resolve().parents] + [Path("/tmp/.unspool")]
    if any(p.is_dir() for p in stray):  # pragma: no cover - a polluted machine
        pytest.skip("a .unspool directory above the temporary directory would be found first")


def test_without_home_unspool_dir_is_found_upwards_like_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_home: None
) -> None:
    project = tmp_path / "project"
    (project / ".unspool").mkdir(parents=True)
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)

    run = located()

    stored_in(project / ".unspool" / "unspool.db", project / ".unspool" / "artifacts", run.id)
    assert not (deep / ".unspool").exists()


@pytest.mark.parametrize("marker", [".git", "pyproject.toml"])
def test_without_home_or_unspool_dir_it_is_created_at_the_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_home: None, marker: str
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    if marker == ".git":
        (root / ".git").mkdir()
    else:
        (root / marker).write_text("[project]\nname = 'x'\n")
    deep = root / "notebooks"
    deep.mkdir()
    monkeypatch.chdir(deep)

    assert find_home(create=False) == root / ".unspool"
    run = located()
    stored_in(root / ".unspool" / "unspool.db", root / ".unspool" / "artifacts", run.id)


def test_without_any_marker_the_working_directory_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_home: None
) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_home(create=False) == tmp_path.resolve() / ".unspool"


def test_store_url_and_artifact_store_override_home(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "elsewhere" / "meta.db"
    db.parent.mkdir()
    artifacts = tmp_path / "bucket"
    monkeypatch.setenv("UNSPOOL_STORE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("UNSPOOL_ARTIFACT_STORE", str(artifacts))

    run = located()

    stored_in(db, artifacts, run.id)
    assert not (home / "unspool.db").exists()
    assert not (home / "artifacts").exists()
    assert Client().get_pipeline_run(run.id).status == ExecutionStatus.COMPLETED


def test_artifact_store_accepts_an_fsspec_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNSPOOL_ARTIFACT_STORE", f"file://{tmp_path / 'fsspec-root'}")
    run = located()
    assert run.steps["answer"].output.load() == 42
    assert list((tmp_path / "fsspec-root").rglob("data.json"))


# -- the metadata store -----------------------------------------------------------------------------


def test_schema_version_table_records_the_schema(home: Path) -> None:
    located()
    with sqlite3.connect(home / "unspool.db") as conn:
        rows = conn.execute("SELECT version, applied_at FROM schema_version ORDER BY version").fetchall()
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert [v for v, _ in rows] == list(range(1, SCHEMA_VERSION + 1))
    assert all(applied > 0 for _, applied in rows)
    assert {"schema_version", "pipelines", "pipeline_runs", "step_runs", "artifacts",
            "artifact_versions", "step_run_artifacts"} <= tables


def test_sqlite_store_is_in_wal_mode(home: Path) -> None:
    located()
    with sqlite3.connect(home / "unspool.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_reopening_a_store_keeps_its_runs_and_schema(home: Path) -> None:
    from unspool.testing import reset_stores

    first = located()
    reset_stores()
    second = located()
    with sqlite3.connect(home / "unspool.db") as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    assert {r.id for r in Client().list_pipeline_runs()} == {first.id, second.id}
