"""Reads of step runs: a run's steps (whole or a page), counts by status, lineage links
and the cache index of a step (re-exported by ``_queries``)."""

from __future__ import annotations

from typing import Any, Sequence

import sqlalchemy as sa

from ._metadata_store import (
    MetadataStore,
    artifact_versions,
    pipeline_runs,
    step_run_artifacts,
    step_runs,
)
from ._queries_common import CHUNK, Row


def get_step_run(store: MetadataStore, step_run_id: str) -> Row | None:
    with store.read() as conn:
        return conn.execute(sa.select(step_runs).where(step_runs.c.id == step_run_id)).mappings().first()


def step_runs_of(store: MetadataStore, run_id: str, *, status: str | None = None, offset: int = 0,
                 limit: int | None = None) -> list[Row]:
    """The step runs of a run in invocation order; ``status``, ``offset`` and ``limit`` pick a
    page in SQL, so that a run of a million steps is never read whole to show fifty."""
    query = sa.select(step_runs).where(step_runs.c.run_id == run_id)
    if status is not None:
        query = query.where(step_runs.c.status == status)
    query = query.order_by(step_runs.c.position)
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    with store.read() as conn:
        return list(conn.execute(query).mappings().all())


def step_status_counts(store: MetadataStore, run_id: str) -> dict[str, int]:
    """Number of a run's step runs per status, counted by the database."""
    with store.read() as conn:
        rows = conn.execute(
            sa.select(step_runs.c.status, sa.func.count())
            .where(step_runs.c.run_id == run_id)
            .group_by(step_runs.c.status)
        ).all()
    return {status: n for status, n in rows}


def unfinished_step_runs(store: MetadataStore, run_ids: Sequence[str]) -> list[Row]:
    """``(id, run_id)`` of the initializing or running step runs of the given runs."""
    out: list[Row] = []
    with store.read() as conn:
        for i in range(0, len(run_ids), CHUNK):
            out.extend(conn.execute(
                sa.select(step_runs.c.id, step_runs.c.run_id).where(
                    step_runs.c.run_id.in_(list(run_ids[i : i + CHUNK])),
                    step_runs.c.status.in_(["running", "initializing"]),
                )
            ).all())
    return out


def step_run_io(store: MetadataStore, step_run_ids: Sequence[str]) -> list[Row]:
    """Lineage links of the given step runs joined with their artifact versions
    (``step_run_id``, ``direction``, ``io_name``, ``position`` and the version's columns)."""
    links: list[Row] = []
    with store.read() as conn:
        for i in range(0, len(step_run_ids), CHUNK):
            links.extend(conn.execute(
                sa.select(
                    step_run_artifacts.c.step_run_id, step_run_artifacts.c.direction,
                    step_run_artifacts.c.name.label("io_name"), step_run_artifacts.c.position,
                    artifact_versions,
                )
                .join(artifact_versions, artifact_versions.c.id == step_run_artifacts.c.artifact_version_id)
                .where(step_run_artifacts.c.step_run_id.in_(list(step_run_ids[i : i + CHUNK])))
                .order_by(step_run_artifacts.c.step_run_id, step_run_artifacts.c.position)
            ).mappings().all())
    return links


def step_run_origins(store: MetadataStore, step_run_ids: Sequence[str]) -> list[Row]:
    """``(id, invocation_id, name)`` of step runs with the name of their run."""
    rows: list[Row] = []
    with store.read() as conn:
        for i in range(0, len(step_run_ids), CHUNK):
            rows.extend(conn.execute(
                sa.select(step_runs.c.id, step_runs.c.invocation_id, pipeline_runs.c.name)
                .join(pipeline_runs, pipeline_runs.c.id == step_runs.c.run_id)
                .where(step_runs.c.id.in_(list(step_run_ids[i : i + CHUNK])))
            ).all())
    return rows


_CACHE_FIELDS = ("id", "name", "uri", "materializer", "data_type", "content_hash", "size",
                 "item_count", "producer_step_run_id", "version")


def completed_outputs(store: MetadataStore, step_name: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(cache key, step run id, output name, artifact fields) of completed runs of a step,
    newest first: the cache index of one step."""
    av = artifact_versions
    query = (
        sa.select(
            step_runs.c.cache_key, step_runs.c.id.label("step_run_id"),
            step_run_artifacts.c.name.label("output_name"), av.c.id, av.c.name, av.c.uri,
            av.c.materializer, av.c.data_type, av.c.content_hash, av.c.size, av.c.item_count,
            av.c.producer_step_run_id, av.c.version,
        )
        .select_from(step_runs)
        .outerjoin(
            step_run_artifacts,
            sa.and_(
                step_run_artifacts.c.step_run_id == step_runs.c.id,
                step_run_artifacts.c.direction == "output",
            ),
        )
        .outerjoin(av, av.c.id == step_run_artifacts.c.artifact_version_id)
        .where(
            step_runs.c.step_name == step_name,
            step_runs.c.status == "completed",
            step_runs.c.cache_key.is_not(None),
        )
        .order_by(step_runs.c.end_time.desc())
    )
    with store.read() as conn:
        return [
            (row.cache_key, row.step_run_id, row.output_name, {f: getattr(row, f) for f in _CACHE_FIELDS})
            for row in conn.execute(query)
        ]
