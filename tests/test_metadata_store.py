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
    """A new store has every schema version, the index that pages a run's steps and the change
    cursor (the latest migration); a version-4 store gains the cursor when opened, keeping its
    rows, and the next write transaction stamps what it writes with the counter's next number."""
    import sqlite3

    from unspool._metadata_store import SCHEMA_VERSION, MetadataStore
    from unspool.testing import reset_stores

    run = tiny()
    reset_stores()
    db = home / "unspool.db"

    def state() -> tuple[list[int], list[str], list[int]]:
        with sqlite3.connect(db) as conn:
            versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
            indexes = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name IN "
                                                  "('step_runs', 'pipeline_runs') AND type = 'index'")]
            counter = [v for (v,) in conn.execute("SELECT value FROM change_counter")]
        return versions, indexes, counter

    versions, indexes, counter = state()
    assert versions == list(range(1, SCHEMA_VERSION + 1)) and SCHEMA_VERSION == 5
    assert {"ix_step_runs_run_position", "ix_step_runs_changed", "ix_pipeline_runs_changed"} <= set(indexes)
    assert counter[0] >= 1
    with sqlite3.connect(db) as conn:  # back to version 4
        for table in ("step_runs", "pipeline_runs"):
            conn.execute(f"DROP INDEX ix_{table}_changed")
            conn.execute(f"ALTER TABLE {table} DROP COLUMN changed")
        conn.execute("DROP TABLE change_counter")
        conn.execute("DELETE FROM schema_version WHERE version = 5")
    MetadataStore(f"sqlite:///{db}").close()  # opening upgrades it

    versions, indexes, counter = state()
    assert versions == list(range(1, SCHEMA_VERSION + 1)) and counter == [0]
    assert {"ix_step_runs_run_position", "ix_step_runs_changed", "ix_pipeline_runs_changed"} <= set(indexes)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT changed FROM pipeline_runs WHERE id = ?", (run.id,)).fetchone() == (None,)
    second = tiny()
    with sqlite3.connect(db) as conn:
        (last,) = conn.execute("SELECT value FROM change_counter").fetchone()
        stamps = conn.execute("SELECT changed FROM pipeline_runs WHERE id = ? UNION ALL "
                              "SELECT changed FROM step_runs WHERE run_id = ?", (second.id, second.id)).fetchall()
    assert last >= 1 and stamps and all(1 <= stamp <= last for (stamp,) in stamps)
    assert [s.invocation_id for s in Client().get_pipeline_run(run.id).list_steps(limit=1)] == ["one"]
