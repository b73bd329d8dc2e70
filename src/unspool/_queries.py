"""Every read of the metadata store: the one place that knows how to ask for runs, step
runs, artifact versions and snapshots.

The client, resume, snapshots, the CLI and the engine (cache index, run-name check,
reading an earlier execution back) all read through these functions; none of them writes
SQL. Each function opens one connection and returns plain rows (mappings keyed by column
name) or tuples; turning rows into the client's models is the caller's business. Writes
all go through the buffered writer in ``_metadata_store.py``.

Runs and snapshots are looked up the same way, by :func:`find_run` / :func:`find_snapshot`:
an exact id or name first, then a unique id prefix of at least six characters.
"""

from __future__ import annotations

from typing import Any, Sequence

import sqlalchemy as sa

from ._metadata_store import (
    MetadataStore,
    artifact_versions,
    pipeline_runs,
    pipelines,
    snapshots,
    step_run_artifacts,
    step_runs,
)

Row = Any  # sqlalchemy RowMapping: read-only, keyed by column name
_CHUNK = 500  # ids per IN (...) list


def _find(store: MetadataStore, table: sa.Table, key: str) -> Row | None:
    """A row by exact id or name, else by a unique id prefix (six characters or more)."""
    with store.read() as conn:
        row = conn.execute(
            sa.select(table).where(sa.or_(table.c.id == key, table.c.name == key))
        ).mappings().first()
        if row is None and len(key) >= 6:
            rows = conn.execute(sa.select(table).where(table.c.id.startswith(key)).limit(2)).mappings().all()
            row = rows[0] if len(rows) == 1 else None
    return row


# -- pipeline runs ------------------------------------------------------------------------------

def find_run(store: MetadataStore, id_or_name: str) -> Row | None:
    """A pipeline run by id, name or unique id prefix; None when there is none."""
    return _find(store, pipeline_runs, id_or_name)


def run_name_taken(store: MetadataStore, name: str) -> bool:
    with store.read() as conn:
        return conn.execute(sa.select(pipeline_runs.c.id).where(pipeline_runs.c.name == name)).first() is not None


def order_by(table: sa.Table, sort_by: str, default: str) -> Any:
    """``"desc:created"``, ``"asc:name"``...: ZenML's sort_by, on a column of ``table``."""
    direction, _, field = (sort_by or "").partition(":")
    if not field:
        direction, field = "desc", direction or default
    column = {"created": "created_at", "updated": "created_at", "start_time": "start_time"}.get(field, field)
    if direction not in ("asc", "desc") or column not in table.c:
        choices = ", ".join(sorted(c.name for c in table.c))
        raise ValueError(f"sort_by {sort_by!r}: expected 'asc:FIELD' or 'desc:FIELD' with FIELD one of created, {choices}")
    col = table.c[column]
    return col.asc() if direction == "asc" else col.desc()


def paged(query: Any, limit: int | None, page: int | None, size: int | None) -> Any:
    """``page``/``size`` (ZenML's paging, pages from 1) or else ``limit`` on ``query``."""
    if page is not None or size is not None:
        size = size or 50
        page = page or 1
        if page < 1 or size < 1:
            raise ValueError(f"page and size must be >= 1, got page={page}, size={size}")
        return query.limit(size).offset((page - 1) * size)
    return query.limit(limit) if limit is not None else query


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


def unfinished_step_runs(store: MetadataStore, run_ids: Sequence[str]) -> list[Row]:
    """``(id, run_id)`` of the initializing or running step runs of the given runs."""
    out: list[Row] = []
    with store.read() as conn:
        for i in range(0, len(run_ids), _CHUNK):
            out.extend(conn.execute(
                sa.select(step_runs.c.id, step_runs.c.run_id).where(
                    step_runs.c.run_id.in_(list(run_ids[i : i + _CHUNK])),
                    step_runs.c.status.in_(["running", "initializing"]),
                )
            ).all())
    return out


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


# -- step runs -------------------------------------------------------------------------------------

def get_step_run(store: MetadataStore, step_run_id: str) -> Row | None:
    with store.read() as conn:
        return conn.execute(sa.select(step_runs).where(step_runs.c.id == step_run_id)).mappings().first()


def step_runs_of(store: MetadataStore, run_id: str) -> list[Row]:
    """The step runs of a run, in invocation order."""
    with store.read() as conn:
        return list(conn.execute(
            sa.select(step_runs).where(step_runs.c.run_id == run_id).order_by(step_runs.c.position)
        ).mappings().all())


def step_run_io(store: MetadataStore, step_run_ids: Sequence[str]) -> list[Row]:
    """Lineage links of the given step runs joined with their artifact versions
    (``step_run_id``, ``direction``, ``io_name``, ``position`` and the version's columns)."""
    links: list[Row] = []
    with store.read() as conn:
        for i in range(0, len(step_run_ids), _CHUNK):
            links.extend(conn.execute(
                sa.select(
                    step_run_artifacts.c.step_run_id, step_run_artifacts.c.direction,
                    step_run_artifacts.c.name.label("io_name"), step_run_artifacts.c.position,
                    artifact_versions,
                )
                .join(artifact_versions, artifact_versions.c.id == step_run_artifacts.c.artifact_version_id)
                .where(step_run_artifacts.c.step_run_id.in_(list(step_run_ids[i : i + _CHUNK])))
                .order_by(step_run_artifacts.c.step_run_id, step_run_artifacts.c.position)
            ).mappings().all())
    return links


def step_run_origins(store: MetadataStore, step_run_ids: Sequence[str]) -> list[Row]:
    """``(id, invocation_id, name)`` of step runs with the name of their run."""
    rows: list[Row] = []
    with store.read() as conn:
        for i in range(0, len(step_run_ids), _CHUNK):
            rows.extend(conn.execute(
                sa.select(step_runs.c.id, step_runs.c.invocation_id, pipeline_runs.c.name)
                .join(pipeline_runs, pipeline_runs.c.id == step_runs.c.run_id)
                .where(step_runs.c.id.in_(list(step_run_ids[i : i + _CHUNK])))
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


# -- artifact versions ---------------------------------------------------------------------------------

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


# -- snapshots -------------------------------------------------------------------------------------------

def find_snapshot(store: MetadataStore, name_or_id: str) -> Row | None:
    """A snapshot by id, name or unique id prefix; None when there is none."""
    return _find(store, snapshots, name_or_id)


def list_snapshots(store: MetadataStore, pipeline_name: str | None = None) -> list[Row]:
    """Snapshots, newest first."""
    query = sa.select(snapshots).order_by(snapshots.c.created_at.desc())
    if pipeline_name is not None:
        query = query.where(snapshots.c.pipeline_name == pipeline_name)
    with store.read() as conn:
        return list(conn.execute(query).mappings().all())
