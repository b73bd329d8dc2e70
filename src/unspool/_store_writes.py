"""Writes that read before they write: deleting a run with what only it uses, and merging
metadata into a stored row.

Each is an operation queued on the metadata store's one buffered writer
(``MetadataStore.queue``). The flush runs it right after committing the rows buffered
before it, in a write transaction of its own, so the operation sees every write this
process made and no other process writes between its read and its write. What it finds
(the files to remove, whether the row existed) is published once that transaction has
committed (``done``); a database error is kept in ``error`` for the caller to raise.

A metadata merge into a run or step row stamps it with a change number, as the flush does
(``changed``, see ``_schema.change_counter``); a run deletion removes rows and stamps none:
readers of the change cursor do not learn of deletions from it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import _queries
from ._errors import StoreError
from ._metadata_store import (
    MetadataStore,
    artifact_versions,
    next_change_in,
    pipeline_runs,
    step_run_artifacts,
    step_runs,
)


class Operation:
    """What ``MetadataStore.queue`` accepts: ``apply`` reads and writes in one transaction."""

    done = False
    error: str | None = None

    def apply(self, conn: sa.Connection) -> int:
        """Read, then write; returns the number of write statements."""
        raise NotImplementedError

    def committed(self) -> None:
        """The transaction of ``apply`` committed: publish what it found."""
        self.done = True

    def run(self, store: MetadataStore) -> None:
        """Called by the store's flush, after the rows buffered before this operation."""
        try:
            with store.write() as conn:
                store.statements += self.apply(conn)
        except sa.exc.SQLAlchemyError as exc:
            self.error = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        else:
            self.committed()

    def result(self) -> None:
        """Raise what the database answered when the operation failed or has not run."""
        if not self.done:
            raise StoreError(f"the metadata store did not complete the {self!r}: {self.error or 'not flushed'}")


class RunDeletion(Operation):
    """Delete a run, its child runs, their step runs and lineage links, and the artifact
    versions they produced that no other run links to (those are kept, their producer
    forgotten). ``files`` lists the deleted versions' URIs once ``done``."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.files: list[str] = []
        self._found: list[str] = []

    def apply(self, conn: sa.Connection) -> int:
        run_ids = _queries.run_tree(conn, self.run_id)
        kept = _queries.versions_used_elsewhere(conn, run_ids)
        n = 0
        for i in range(0, len(kept), _queries.CHUNK):
            conn.execute(
                artifact_versions.update()
                .where(artifact_versions.c.id.in_(kept[i : i + _queries.CHUNK]))
                .values(producer_step_run_id=None, run_id=None)
            )
            n += 1
        self._found = _queries.version_uris(conn, run_ids)
        own_steps = sa.select(step_runs.c.id).where(step_runs.c.run_id.in_(run_ids))
        conn.execute(artifact_versions.delete().where(artifact_versions.c.run_id.in_(run_ids)))
        conn.execute(step_run_artifacts.delete().where(step_run_artifacts.c.step_run_id.in_(own_steps)))
        conn.execute(step_runs.delete().where(step_runs.c.run_id.in_(run_ids)))
        conn.execute(pipeline_runs.delete().where(pipeline_runs.c.id.in_(run_ids)))
        return n + 4

    def committed(self) -> None:
        self.files, self.done = self._found, True

    def __repr__(self) -> str:
        return f"deletion of run {self.run_id}"


_METADATA_COLUMNS = {
    "run": (pipeline_runs, "run_metadata"),
    "step_run": (step_runs, "step_metadata"),
    "artifact_version": (artifact_versions, "artifact_metadata"),
}


class MetadataMerge(Operation):
    """Lay ``metadata`` over the stored metadata of a run, step run or artifact version
    (``kind``), keys given winning. ``found`` is False after the flush if the row is gone."""

    def __init__(self, kind: str, row_id: str, metadata: dict[str, Any]) -> None:
        self.table, self.column = _METADATA_COLUMNS[kind]
        self.kind, self.row_id, self.metadata = kind, row_id, dict(metadata)
        self.found = self._found = False

    def apply(self, conn: sa.Connection) -> int:
        current = _queries.stored_metadata(conn, self.table, self.column, self.row_id)
        self._found = current is not None
        if current is None:
            return 0
        values: dict[str, Any] = {self.column: {**current, **self.metadata}}
        if self.table is not artifact_versions:
            values["changed"] = next_change_in(conn)
        conn.execute(self.table.update().where(self.table.c.id == self.row_id).values(values))
        return 1 + ("changed" in values)

    def committed(self) -> None:
        self.found, self.done = self._found, True

    def __repr__(self) -> str:
        return f"metadata of {self.kind} {self.row_id}"


def delete_run(store: MetadataStore, run_id: str) -> RunDeletion:
    """Queue the deletion of ``run_id`` (see :class:`RunDeletion`) and flush it."""
    deletion = RunDeletion(run_id)
    store.queue(deletion)
    store.flush()
    deletion.result()
    return deletion


def merge_metadata(store: MetadataStore, kind: str, row_id: str, metadata: dict[str, Any]) -> MetadataMerge:
    """Queue a :class:`MetadataMerge` and flush it."""
    merge = MetadataMerge(kind, row_id, metadata)
    store.queue(merge)
    store.flush()
    merge.result()
    return merge
