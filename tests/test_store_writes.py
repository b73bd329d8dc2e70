"""Writes that read first (deleting a run, merging metadata) go through the store's one
buffered writer, in its flush transaction, and see what was buffered before them; on
SQLite and on a real PostgreSQL server alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from unspool import Client, NotFoundError, StoreError, log_metadata, pipeline, step
from unspool._ids import new_id
from unspool._store_writes import MetadataMerge, Operation, RunDeletion
from unspool._stores import open_stores


@pytest.fixture(params=["sqlite", "postgresql"], autouse=True)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        request.getfixturevalue("pg_url")  # a new database on the test cluster, as UNSPOOL_STORE_URL
    return str(request.param)


@step
def leaf(x: int) -> int:
    return x + 1


@step(enable_cache=False)
def shared_input(x: int) -> int:
    return x * 10


@pipeline(dynamic=True)
def child(x: int) -> int:
    return leaf(x)


@pipeline(dynamic=True)
def parent(x: int) -> None:
    child(x)
    child(x + 100)


def test_deleting_a_run_removes_its_child_runs_and_their_files_in_one_flush() -> None:
    run = parent(1)
    children = run.child_runs
    assert len(children) == 2
    files = [Path(c.steps["leaf"].output.uri) for c in children]
    assert all(f.exists() for f in files)
    store = open_stores().metadata
    writes = store.statements

    Client().delete_pipeline_run(run.name)

    assert store.statements > writes  # the deletion went through the writer's flush
    for gone in (run, *children):
        with pytest.raises(NotFoundError):
            Client().get_pipeline_run(gone.id)
    assert not any(f.exists() for f in files)
    assert Client().list_artifact_versions(children[0].steps["leaf"].output.name) == []


def test_a_version_another_run_read_survives_the_deletion_of_its_producer() -> None:
    @pipeline(dynamic=True)
    def produce() -> None:
        shared_input(4)

    @pipeline(dynamic=True)
    def consume(version_id: str) -> None:
        leaf(Client().get_artifact_version(version_id))

    first = produce()
    version = first.steps["shared_input"].output
    consume(version.id)
    Client().delete_pipeline_run(first.id)

    kept = Client().get_artifact_version(version.id)
    assert kept.load() == 40 and kept.producer_step_run_id is None and kept.run_id is None


def test_a_queued_deletion_sees_rows_still_buffered_before_it() -> None:
    store = open_stores().metadata
    run_id = new_id()
    store.insert_run({
        "id": run_id, "name": f"buffered-{run_id}", "pipeline_name": "p", "status": "completed",
        "dynamic": True, "parameters": {}, "config": {}, "run_metadata": {}, "created_at": 0.0,
    })
    deletion = RunDeletion(run_id)
    store.queue(deletion)
    assert not deletion.done  # nothing runs before the flush
    store.flush()
    assert deletion.done
    with pytest.raises(NotFoundError):
        Client().get_pipeline_run(run_id)


def test_metadata_merges_keep_every_key_and_report_a_missing_row() -> None:
    run = child(1)
    version = run.steps["leaf"].output
    log_metadata({"a": 1}, artifact_version_id=version.id)
    log_metadata({"b": 2, "a": 3}, artifact_version_id=version.id)
    assert Client().get_artifact_version(version.id).metadata == {**version.metadata, "a": 3, "b": 2}
    log_metadata({"reviewed": True}, run_id_name_or_prefix=run.id)
    log_metadata({"score": 0.5}, step_id=run.steps["leaf"].id)
    again = Client().get_pipeline_run(run.id)
    assert again.metadata["reviewed"] is True and "step_counts" in again.metadata
    assert again.steps["leaf"].metadata["score"] == 0.5

    store = open_stores().metadata
    missing = MetadataMerge("run", "no-such-run", {"x": 1})
    store.queue(missing)
    store.flush()
    assert missing.done and not missing.found


def test_an_operation_the_database_refuses_fails_alone_and_the_writer_goes_on() -> None:
    class Broken(Operation):
        def apply(self, conn: sa.Connection) -> int:
            conn.execute(sa.text("UPDATE no_such_table SET x = 1"))
            return 1

    store = open_stores().metadata
    broken = Broken()
    store.queue(broken)
    run = child(5)  # its rows and the broken operation share flushes
    store.flush()
    assert not broken.done and broken.error and "no_such_table" in broken.error
    with pytest.raises(StoreError, match="no_such_table"):
        broken.result()
    assert Client().get_pipeline_run(run.id).steps["leaf"].output.load() == 6


def test_lineage_links_queue_as_tuples_and_a_refused_one_is_dropped_alone() -> None:
    run = child(5)
    store = open_stores().metadata
    leaf_run = Client().get_pipeline_run(run.id).steps["leaf"]
    out = leaf_run.output
    # A link the database refuses (its name is NOT NULL) between two it accepts: the writer
    # drops only that one (``_salvage``), on SQLite's raw writer and SQLAlchemy's alike.
    good, bad, also = new_id(), new_id(), new_id()
    store.insert_links([(good, out.id, "input", "x", 0, None), (bad, out.id, "input", None, 0, None),
                        (also, out.id, "input", "y", 1, 3)])
    store.flush()
    assert [r["key"] for r in store.rejected if r["what"] == "lineage link"] == [f"{bad}->{out.id}"]
    table = sa.table("step_run_artifacts", sa.column("step_run_id"), sa.column("name"), sa.column("position"),
                     sa.column("item_index"), sa.column("direction"))
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.step_run_id, table.c.name, table.c.position, table.c.item_index,
                                      table.c.direction).where(table.c.step_run_id.in_([good, bad, also]))).all()
        recorded = conn.execute(sa.select(table.c.direction).where(table.c.step_run_id == leaf_run.id)).scalars().all()
    assert sorted(map(tuple, rows)) == sorted([(good, "x", 0, None, "input"), (also, "y", 1, 3, "input")])
    assert recorded == ["output"]  # the step's own link, written from its tuple
