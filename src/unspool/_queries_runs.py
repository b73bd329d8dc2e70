"""Reads of pipeline runs and pipelines (re-exported by ``_queries``)."""

from __future__ import annotations

import sqlalchemy as sa

from ._metadata_store import (
    MetadataStore,
    artifact_versions,
    pipeline_runs,
    pipelines,
    step_run_artifacts,
    step_runs,
)
from ._queries_common import Row, find, order_by, paged


def find_run(store: MetadataStore, id_or_name: str) -> Row | None:
    """A pipeline run by id, name or unique id prefix; None when there is none."""
    return find(store, pipeline_runs, id_or_name)


def run_name_taken(store: MetadataStore, name: str) -> bool:
    with store.read() as conn:
        return conn.execute(sa.select(pipeline_runs.c.id).where(pipeline_runs.c.name == name)).first() is not None


def list_runs(
    store: MetadataStore,
    *,
    pipeline_name: str | None = None,
    status: str | None = None,
    parent_run_id: str | None = None,
    limit: int | None = None,
    sort_by: str = "desc:created",
    page: int | None = None,
    size: int | None = None,
) -> list[Row]:
    """Runs, newest first (children of ``parent_run_id``: in the order they were created)."""
    query = sa.select(pipeline_runs)
    if pipeline_name is not None:
        query = query.where(pipeline_runs.c.pipeline_name == pipeline_name)
    if status is not None:
        query = query.where(pipeline_runs.c.status == status)
    if parent_run_id is not None:
        query = query.where(pipeline_runs.c.parent_run_id == parent_run_id).order_by(pipeline_runs.c.created_at)
    else:
        query = query.order_by(order_by(pipeline_runs, sort_by, "created_at"))
    query = paged(query, limit, page, size)
    with store.read() as conn:
        return list(conn.execute(query).mappings().all())


def get_pipeline(store: MetadataStore, name: str) -> Row | None:
    with store.read() as conn:
        return conn.execute(sa.select(pipelines).where(pipelines.c.name == name)).mappings().first()


def list_pipelines(store: MetadataStore, sort_by: str = "asc:name", page: int | None = None,
                   size: int | None = None) -> list[Row]:
    query = paged(sa.select(pipelines).order_by(order_by(pipelines, sort_by, "name")), None, page, size)
    with store.read() as conn:
        return list(conn.execute(query).mappings().all())


def live_runs(store: MetadataStore) -> list[Row]:
    """``(id, orchestrator, heartbeat, owner)`` of every run recorded as initializing or running."""
    with store.read() as conn:
        return list(conn.execute(
            sa.select(pipeline_runs.c.id, pipeline_runs.c.orchestrator, pipeline_runs.c.heartbeat,
                      pipeline_runs.c.owner)
            .where(pipeline_runs.c.status.in_(["running", "initializing"]))
        ).all())


def run_record(store: MetadataStore, run_id: str) -> tuple[Row, list[Row], list[Row], list[tuple[str, str]]]:
    """Everything one execution of a run left behind, for resuming it: the run row, its step
    run rows, the output artifact versions of those step runs (with ``step_run_id`` and
    ``output_name``), and ``(invocation id, run id)`` of its child runs."""
    with store.read() as conn:
        run = conn.execute(sa.select(pipeline_runs).where(pipeline_runs.c.id == run_id)).mappings().one()
        rows = conn.execute(sa.select(step_runs).where(step_runs.c.run_id == run_id)).mappings().all()
        outputs = conn.execute(
            sa.select(step_run_artifacts.c.step_run_id, step_run_artifacts.c.name.label("output_name"), artifact_versions)
            .join(artifact_versions, artifact_versions.c.id == step_run_artifacts.c.artifact_version_id)
            .join(step_runs, step_runs.c.id == step_run_artifacts.c.step_run_id)
            .where(step_runs.c.run_id == run_id, step_run_artifacts.c.direction == "output")
        ).mappings().all()
        children = conn.execute(
            sa.select(pipeline_runs.c.invocation_id, pipeline_runs.c.id).where(pipeline_runs.c.parent_run_id == run_id)
        ).all()
    return run, list(rows), list(outputs), [(inv_id, cid) for inv_id, cid in children]


def run_tree(conn: sa.Connection, run_id: str) -> list[str]:
    """``run_id`` and the ids of its child runs, their children and so on (read inside the
    writer's transaction that deletes them)."""
    ids, frontier = [run_id], [run_id]
    while frontier:
        children = list(conn.execute(
            sa.select(pipeline_runs.c.id).where(pipeline_runs.c.parent_run_id.in_(frontier))).scalars())
        ids.extend(children)
        frontier = children
    return ids

