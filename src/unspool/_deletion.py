"""Deleting a pipeline run (``Client().delete_pipeline_run``).

The run, its child runs, their step runs and lineage rows are removed. An artifact version
the run produced is removed with its files only when no other run uses it: a cached step of
a later run, or a step that read it, keeps it (its producer is then recorded as unknown).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def _run_tree(conn: Any, run_id: str) -> list[str]:
    from ._metadata_store import pipeline_runs

    ids, frontier = [run_id], [run_id]
    while frontier:
        children = [r[0] for r in conn.execute(
            sa.select(pipeline_runs.c.id).where(pipeline_runs.c.parent_run_id.in_(frontier))).all()]
        ids.extend(children)
        frontier = children
    return ids


def delete_run(client: Any, run_id: str) -> None:
    from ._metadata_store import artifact_versions, pipeline_runs, step_run_artifacts, step_runs

    store = client.store
    store.flush()
    files: list[str] = []
    with store.write() as conn:
        run_ids = _run_tree(conn, run_id)
        step_ids = [r[0] for r in conn.execute(sa.select(step_runs.c.id).where(step_runs.c.run_id.in_(run_ids))).all()]
        produced = conn.execute(
            sa.select(artifact_versions.c.id, artifact_versions.c.uri, artifact_versions.c.name)
            .where(artifact_versions.c.run_id.in_(run_ids))
        ).all()
        for version_id, uri, _name in produced:
            used_elsewhere = conn.execute(
                sa.select(sa.func.count()).select_from(step_run_artifacts).where(
                    step_run_artifacts.c.artifact_version_id == version_id,
                    step_run_artifacts.c.step_run_id.not_in(step_ids) if step_ids else sa.true(),
                )
            ).scalar_one()
            if used_elsewhere:
                conn.execute(sa.update(artifact_versions).where(artifact_versions.c.id == version_id)
                             .values(producer_step_run_id=None, run_id=None))
            else:
                conn.execute(sa.delete(artifact_versions).where(artifact_versions.c.id == version_id))
                files.append(uri)
        if step_ids:
            conn.execute(sa.delete(step_run_artifacts).where(step_run_artifacts.c.step_run_id.in_(step_ids)))
            conn.execute(sa.delete(step_runs).where(step_runs.c.id.in_(step_ids)))
        conn.execute(sa.delete(pipeline_runs).where(pipeline_runs.c.id.in_(run_ids)))
    artifacts = client.stores.artifacts
    for uri in files:
        try:
            artifacts.remove(uri)
        except Exception:  # a file already gone is what we wanted
            pass
    client.stores.forget_cached()  # deleted outputs must not be cache hits in this process
