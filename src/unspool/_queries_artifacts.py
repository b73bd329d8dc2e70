"""Reads of artifact versions and their lineage links (re-exported by ``_queries``)."""

from __future__ import annotations

from typing import Any, Sequence

import sqlalchemy as sa

from ._metadata_store import MetadataStore, artifact_versions, step_run_artifacts, step_runs
from ._queries_common import Row, order_by, paged


def get_artifact_version(store: MetadataStore, name: str, version: int | None = None) -> Row | None:
    """A version of an artifact by name (the latest when ``version`` is None), else by id."""
    query = sa.select(artifact_versions).where(artifact_versions.c.name == name)
    if version is not None:
        query = query.where(artifact_versions.c.version == int(version))
    query = query.order_by(artifact_versions.c.version.desc()).limit(1)
    with store.read() as conn:
        row = conn.execute(query).mappings().first()
        if row is None and version is None:
            row = conn.execute(sa.select(artifact_versions).where(artifact_versions.c.id == name)).mappings().first()
    return row


def list_artifact_versions(store: MetadataStore, name: str | None = None, limit: int | None = None,
                           sort_by: str = "desc:created", page: int | None = None,
                           size: int | None = None) -> list[Row]:
    """Artifact versions, newest first."""
    query = sa.select(artifact_versions).order_by(
        order_by(artifact_versions, sort_by, "created_at"), artifact_versions.c.version.desc()
    )
    if name is not None:
        query = query.where(artifact_versions.c.name == name)
    query = paged(query, limit, page, size)
    with store.read() as conn:
        return list(conn.execute(query).mappings().all())


def consumers_of(store: MetadataStore, artifact_version_id: str) -> list[str]:
    """Ids of the step runs that took an artifact version as an input."""
    with store.read() as conn:
        return list(conn.execute(
            sa.select(step_run_artifacts.c.step_run_id)
            .where(
                step_run_artifacts.c.artifact_version_id == artifact_version_id,
                step_run_artifacts.c.direction == "input",
            )
            .distinct()
        ).scalars().all())


def artifact_names(store: MetadataStore) -> list[dict[str, Any]]:
    """Artifact names with their number of versions, latest version and last update."""
    with store.read() as conn:
        rows = conn.execute(
            sa.select(
                artifact_versions.c.name,
                sa.func.count().label("versions"),
                sa.func.max(artifact_versions.c.version).label("latest"),
                sa.func.max(artifact_versions.c.created_at).label("updated"),
            ).group_by(artifact_versions.c.name).order_by(sa.desc("updated"))
        ).mappings().all()
    return [dict(r) for r in rows]


def versions_used_elsewhere(conn: sa.Connection, run_ids: Sequence[str]) -> list[str]:
    """Ids of the artifact versions produced by ``run_ids`` that a step run of another run
    links to (a cached step, or a step that read it). Read inside the writer's transaction
    that deletes the runs: these versions are kept, the others go."""
    own_steps = sa.select(step_runs.c.id).where(step_runs.c.run_id.in_(run_ids))
    return list(conn.execute(
        sa.select(step_run_artifacts.c.artifact_version_id)
        .join(artifact_versions, artifact_versions.c.id == step_run_artifacts.c.artifact_version_id)
        .where(artifact_versions.c.run_id.in_(run_ids), step_run_artifacts.c.step_run_id.not_in(own_steps))
        .distinct()
    ).scalars())


def version_uris(conn: sa.Connection, run_ids: Sequence[str]) -> list[str]:
    """Where the artifact versions recorded as produced by ``run_ids`` live."""
    return list(conn.execute(
        sa.select(artifact_versions.c.uri).where(artifact_versions.c.run_id.in_(run_ids))).scalars())
