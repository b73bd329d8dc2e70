"""The metadata store's writer: a row the database refuses never blocks the others."""

from __future__ import annotations

import sqlalchemy as sa

from unspool import Client, pipeline, step
from unspool._metadata_store import pipelines, step_runs
from unspool.testing import current_stores


@step
def one() -> int:
    return 1


@pipeline(dynamic=True)
def tiny() -> None:
    one()


def test_a_refused_row_is_dropped_and_reported_and_everything_else_lands(capfd) -> None:
    first = tiny()
    store = current_stores().metadata
    original = Client().get_step_run(first.steps["one"].id)
    with store.read() as conn:
        row = dict(conn.execute(sa.select(step_runs).where(step_runs.c.id == original.id)).mappings().one())

    duplicate = {**row, "id": "f" * 32}  # same (run, invocation id): the unique constraint refuses it
    store.insert_step_run(duplicate)
    store.add_pipeline("still_recorded")
    store.flush()  # does not raise, does not requeue

    assert [r["what"] for r in store.rejected] == ["step run"]
    assert store.rejected[0]["key"] == "f" * 32
    assert "UNIQUE" in store.rejected[0]["error"].upper()
    assert "the metadata store refused step run" in capfd.readouterr().err
    with store.read() as conn:
        names = set(conn.execute(sa.select(pipelines.c.name)).scalars())
        assert conn.execute(sa.select(sa.func.count()).select_from(step_runs)).scalar() == 1
    assert "still_recorded" in names

    second = tiny()  # the writer is not stuck on the refused row
    assert second.status.value == "completed"
    assert Client().get_pipeline_run(second.id).steps["one"].status.value == "cached"


def test_a_new_store_is_created_at_the_latest_schema_and_an_older_one_upgraded(home) -> None:
    """A new store has every schema version and the index that pages a run's steps (the
    latest migration); a store one version older gets it when opened, keeping its rows."""
    import sqlite3

    from unspool._metadata_store import SCHEMA_VERSION, MetadataStore
    from unspool.testing import reset_stores

    run = tiny()
    reset_stores()
    db = home / "unspool.db"

    def state() -> tuple[list[int], list[str]]:
        with sqlite3.connect(db) as conn:
            versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
            indexes = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'step_runs' AND type = 'index'")]
        return versions, indexes

    versions, indexes = state()
    assert versions == list(range(1, SCHEMA_VERSION + 1)) and "ix_step_runs_run_position" in indexes
    with sqlite3.connect(db) as conn:
        conn.execute("DROP INDEX ix_step_runs_run_position")
        conn.execute("DELETE FROM schema_version WHERE version = ?", (SCHEMA_VERSION,))
    MetadataStore(f"sqlite:///{db}").close()  # opening upgrades it

    versions, indexes = state()
    assert versions == list(range(1, SCHEMA_VERSION + 1)) and "ix_step_runs_run_position" in indexes
    assert [s.invocation_id for s in Client().get_pipeline_run(run.id).list_steps(limit=1)] == ["one"]
