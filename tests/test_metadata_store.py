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
