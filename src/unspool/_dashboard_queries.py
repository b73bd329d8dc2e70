"""Every read the dashboard makes of the metadata store, in SQLAlchemy Core.

The stores layer's second query module (``_queries`` serves the client, resume, the CLI and
the engine): the dashboard's server and watcher open a connection with
``MetadataStore.read()`` and pass it to these functions, which answer several questions in
one transaction. Nothing here writes and nothing imports the web server.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import sqlalchemy as sa

from ._metadata_store import (
    artifact_versions,
    change_counter,
    pipeline_runs,
    snapshots,
    step_run_artifacts,
    step_runs,
)

ACTIVE = ("initializing", "running")
TERMINAL = ("completed", "failed", "cached", "skipped", "stopped")

# The columns of a run that lists show (the big JSON columns stay in the database).
_RUN_SUMMARY = (
    pipeline_runs.c.id, pipeline_runs.c.name, pipeline_runs.c.pipeline_name, pipeline_runs.c.status,
    pipeline_runs.c.dynamic, pipeline_runs.c.parent_run_id, pipeline_runs.c.invocation_id,
    pipeline_runs.c.error, pipeline_runs.c.run_metadata, pipeline_runs.c.orchestrator,
    pipeline_runs.c.snapshot_id, pipeline_runs.c.start_time, pipeline_runs.c.end_time,
    pipeline_runs.c.created_at,
)
_STEP_SUMMARY = (
    step_runs.c.id, step_runs.c.run_id, step_runs.c.invocation_id, step_runs.c.position,
    step_runs.c.step_name, step_runs.c.status, step_runs.c.start_time, step_runs.c.end_time,
)


# -- cursors -------------------------------------------------------------------------------------

def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc
    if not isinstance(values, list):
        raise ValueError(f"invalid cursor {cursor!r}")
    return values


# -- runs ----------------------------------------------------------------------------------------

def list_runs(
    conn: sa.Connection,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    parent: str | None = None,
    top_level: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Runs newest first, ``limit`` at a time; returns the page and the next page's cursor."""
    query = sa.select(*_RUN_SUMMARY)
    if pipeline:
        query = query.where(pipeline_runs.c.pipeline_name == pipeline)
    if status:
        query = query.where(pipeline_runs.c.status == status)
    if parent:
        query = query.where(pipeline_runs.c.parent_run_id == parent)
    elif top_level:
        query = query.where(pipeline_runs.c.parent_run_id.is_(None))
    if cursor:
        created, run_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                pipeline_runs.c.created_at < created,
                sa.and_(pipeline_runs.c.created_at == created, pipeline_runs.c.id < run_id),
            )
        )
    query = query.order_by(pipeline_runs.c.created_at.desc(), pipeline_runs.c.id.desc()).limit(limit + 1)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    live = [r["id"] for r in rows if r["status"] in ACTIVE]
    counts = step_counts(conn, live) if live else {}
    for r in rows:
        recorded = (r.get("run_metadata") or {}).get("step_counts")
        r["step_counts"] = counts.get(r["id"], {}) if r["id"] in counts or recorded is None else recorded
        r["failed_steps"] = list((r.get("error") or {}).get("failed_steps") or [])
    next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
    return rows, next_cursor


def step_counts(conn: sa.Connection, run_ids: list[str]) -> dict[str, dict[str, int]]:
    """Steps by status, per run."""
    out: dict[str, dict[str, int]] = {run_id: {} for run_id in run_ids}
    if not run_ids:
        return out
    rows = conn.execute(
        sa.select(step_runs.c.run_id, step_runs.c.status, sa.func.count())
        .where(step_runs.c.run_id.in_(run_ids))
        .group_by(step_runs.c.run_id, step_runs.c.status)
    )
    for run_id, status, n in rows:
        out[run_id][status] = n
    return out


def get_run(conn: sa.Connection, run_id: str) -> dict[str, Any] | None:
    """A run by id, name or unique id prefix (6+ characters), with every column."""
    row = conn.execute(
        sa.select(pipeline_runs).where(sa.or_(pipeline_runs.c.id == run_id, pipeline_runs.c.name == run_id))
    ).mappings().first()
    if row is None and len(run_id) >= 6:
        found = conn.execute(
            sa.select(pipeline_runs).where(pipeline_runs.c.id.startswith(run_id)).limit(2)
        ).mappings().all()
        row = found[0] if len(found) == 1 else None
    return None if row is None else dict(row)


def child_runs(conn: sa.Connection, run_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(*_RUN_SUMMARY).where(pipeline_runs.c.parent_run_id == run_id).order_by(pipeline_runs.c.created_at)
    ).mappings()
    return [dict(r) for r in rows]


def pipelines_seen(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.select(pipeline_runs.c.pipeline_name).distinct().order_by(pipeline_runs.c.pipeline_name)).scalars())


# -- steps ---------------------------------------------------------------------------------------

def map_key(conn: sa.Connection) -> Any:
    """The marker the engine records on every member of one ``.map()``/``.product()`` call
    (its first member's invocation id, in the step run's ``config``); NULL for other steps."""
    return step_runs.c.config["map"].as_string()


def _json_text(conn: sa.Connection, column: Any) -> Any:
    """A JSON column as its stored text: grouped and compared by the database, parsed once per
    distinct value by the caller."""
    if conn.dialect.name == "postgresql":
        return sa.cast(column, sa.Text)
    return sa.type_coerce(column, sa.Text)


def graph_rows(conn: sa.Connection, run_id: str) -> list[tuple[Any, ...]]:
    """The one query behind the graph, aggregated by the database: (map key or None, status,
    upstream JSON text, count, first position, last position, step name, a step run id, an
    invocation id), one row per map call, status and distinct upstream list, and one per step
    that no map made (whose id and invocation id are then its own). Ordered by first position.
    A 100,000-member map with one shared input comes back as a handful of rows."""
    key = map_key(conn)
    node = sa.func.coalesce(key, step_runs.c.invocation_id)
    upstream = _json_text(conn, step_runs.c.upstream)
    query = (
        sa.select(
            sa.func.max(key), step_runs.c.status, upstream, sa.func.count(), sa.func.min(step_runs.c.position),
            sa.func.max(step_runs.c.position), sa.func.min(step_runs.c.step_name), sa.func.min(step_runs.c.id),
            sa.func.min(step_runs.c.invocation_id),
        )
        .where(step_runs.c.run_id == run_id)
        .group_by(node, step_runs.c.status, upstream)
        .order_by(sa.func.min(step_runs.c.position))
    )
    return [tuple(r) for r in conn.execute(query)]


_SEP = "\x1f"  # the ASCII unit separator: joins invocation ids in one aggregated string


def map_members(conn: sa.Connection, run_id: str) -> dict[str, str]:
    """Invocation id -> ``g:`` + map key (its group's node id) of every mapped step of a run,
    read only when some step's upstream names a map member (a step that gathers a map's
    outputs). The database joins ids and keys into two strings (one aggregate, no sort, no
    row objects: half the time of reading 100,000 rows); ids holding the separator fall back
    to reading rows."""
    inner = sa.select(step_runs.c.invocation_id, map_key(conn).label("key")).where(step_runs.c.run_id == run_id).subquery()
    ids, keys, n = conn.execute(
        sa.select(
            sa.func.aggregate_strings(inner.c.invocation_id, _SEP),
            sa.func.aggregate_strings(sa.literal("g:", sa.String) + inner.c.key, _SEP),
            sa.func.count(inner.c.key),
        ).where(inner.c.key.is_not(None))
    ).one()
    if not n:
        return {}
    pairs = dict(zip(ids.split(_SEP), keys.split(_SEP)))
    if len(pairs) == n:
        return pairs
    rows = conn.execute(sa.select(inner.c.invocation_id, sa.literal("g:", sa.String) + inner.c.key).where(inner.c.key.is_not(None)))
    return {inv: key for inv, key in rows}


def group_members(conn: sa.Connection, run_id: str, key: str, first: int, last: int, limit: int) -> list[tuple[Any, ...]]:
    """(id, invocation id, position, step name, status) of one map call's members, in order."""
    rows = conn.execute(
        sa.select(step_runs.c.id, step_runs.c.invocation_id, step_runs.c.position, step_runs.c.step_name, step_runs.c.status)
        .where(
            step_runs.c.run_id == run_id, step_runs.c.position >= first, step_runs.c.position <= last,
            map_key(conn) == key,
        )
        .order_by(step_runs.c.position)
        .limit(limit)
    )
    return [tuple(r) for r in rows]


def owners_of(conn: sa.Connection, run_ids: list[str], invocation_ids: list[str]) -> dict[str, str]:
    """Which of ``run_ids`` holds each invocation id (a child run's step feeding its parent)."""
    out: dict[str, str] = {}
    if not run_ids or not invocation_ids:
        return out
    for i in range(0, len(invocation_ids), 500):
        rows = conn.execute(
            sa.select(step_runs.c.invocation_id, step_runs.c.run_id).where(
                step_runs.c.run_id.in_(run_ids), step_runs.c.invocation_id.in_(invocation_ids[i : i + 500])
            )
        )
        out.update({inv: run for inv, run in rows})
    return out


def inputs_from_runs(conn: sa.Connection, run_id: str, producer_runs: list[str]) -> list[tuple[str, str, str]]:
    """(invocation id in ``run_id``, producing run, producing invocation id) for each input a step of ``run_id`` read
    from an artifact produced in one of ``producer_runs`` (its child runs): lineage tells
    which run an upstream invocation id belongs to when a child reuses the parent's names."""
    if not producer_runs:
        return []
    consumer = step_runs.alias("consumer")
    producer = step_runs.alias("producer")
    rows = conn.execute(
        sa.select(consumer.c.invocation_id, producer.c.run_id, producer.c.invocation_id)
        .select_from(step_run_artifacts)
        .join(consumer, consumer.c.id == step_run_artifacts.c.step_run_id)
        .join(artifact_versions, artifact_versions.c.id == step_run_artifacts.c.artifact_version_id)
        .join(producer, producer.c.id == artifact_versions.c.producer_step_run_id)
        .where(
            consumer.c.run_id == run_id,
            step_run_artifacts.c.direction == "input",
            producer.c.run_id.in_(producer_runs),
        )
        .distinct()
    )
    return [(inv, run, up) for inv, run, up in rows]


def list_steps(
    conn: sa.Connection,
    run_id: str,
    *,
    status: str | None = None,
    step_name: str | None = None,
    position_from: int | None = None,
    position_to: int | None = None,
    search: str | None = None,
    limit: int = 200,
    cursor: str | None = None,
    map_call: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A run's steps in invocation order, paged by position; ``map_call``: the members of one
    map call (its marker)."""
    query = sa.select(*_STEP_SUMMARY).where(step_runs.c.run_id == run_id)
    if map_call:
        query = query.where(map_key(conn) == map_call)
    if status:
        query = query.where(step_runs.c.status == status)
    if step_name:
        query = query.where(step_runs.c.step_name == step_name)
    if position_from is not None:
        query = query.where(step_runs.c.position >= position_from)
    if position_to is not None:
        query = query.where(step_runs.c.position <= position_to)
    if search:
        query = query.where(step_runs.c.invocation_id.contains(search, autoescape=True))
    if cursor:
        (after,) = decode_cursor(cursor)
        query = query.where(step_runs.c.position > int(after))
    rows = [dict(r) for r in conn.execute(query.order_by(step_runs.c.position).limit(limit + 1)).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]["position"]) if more and rows else None)


def timeline(conn: sa.Connection, run_id: str, limit: int) -> list[dict[str, Any]]:
    """The steps of a run that started, in start order, with where each ran (``runtime``)."""
    rows = conn.execute(
        sa.select(*_STEP_SUMMARY, step_runs.c.config)
        .where(step_runs.c.run_id == run_id, step_runs.c.start_time.is_not(None))
        .order_by(step_runs.c.start_time, step_runs.c.position)
        .limit(limit)
    ).mappings()
    out = []
    for r in rows:
        row = dict(r)
        config = row.pop("config") or {}
        row["runtime"] = config.get("runtime") or "inline"
        out.append(row)
    return out


def get_step(conn: sa.Connection, step_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(step_runs).where(step_runs.c.id == step_id)).mappings().first()
    return None if row is None else dict(row)


def step_brief(conn: sa.Connection, step_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not step_ids:
        return {}
    rows = conn.execute(sa.select(*_STEP_SUMMARY).where(step_runs.c.id.in_(step_ids))).mappings()
    return {r["id"]: dict(r) for r in rows}


def step_io(conn: sa.Connection, step_id: str) -> list[dict[str, Any]]:
    """The artifact versions a step read and wrote, with the link's name and direction."""
    rows = conn.execute(
        sa.select(
            step_run_artifacts.c.direction, step_run_artifacts.c.name.label("io_name"),
            step_run_artifacts.c.position.label("io_position"), step_run_artifacts.c.item_index,
            *_VERSION_SUMMARY,
        )
        .join(artifact_versions, artifact_versions.c.id == step_run_artifacts.c.artifact_version_id)
        .where(step_run_artifacts.c.step_run_id == step_id)
        .order_by(step_run_artifacts.c.direction, step_run_artifacts.c.name, step_run_artifacts.c.position)
    ).mappings()
    return [dict(r) for r in rows]


# -- artifacts -------------------------------------------------------------------------------------

_VERSION_SUMMARY = (
    artifact_versions.c.id, artifact_versions.c.name, artifact_versions.c.version, artifact_versions.c.uri,
    artifact_versions.c.data_type, artifact_versions.c.materializer, artifact_versions.c.size,
    artifact_versions.c.item_count, artifact_versions.c.producer_step_run_id, artifact_versions.c.run_id,
    artifact_versions.c.created_at,
)


def list_artifacts(conn: sa.Connection, *, search: str | None = None, limit: int = 200, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Artifact names with their number of versions and latest version, by name."""
    av = artifact_versions
    query = sa.select(
        av.c.name, sa.func.count().label("versions"), sa.func.max(av.c.version).label("latest"),
        sa.func.max(av.c.created_at).label("updated"),
    ).group_by(av.c.name)
    if search:
        query = query.where(av.c.name.contains(search, autoescape=True))
    if cursor:
        (after,) = decode_cursor(cursor)
        query = query.where(av.c.name > after)
    rows = [dict(r) for r in conn.execute(query.order_by(av.c.name).limit(limit + 1)).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]["name"]) if more and rows else None)


def artifact_versions_of(conn: sa.Connection, name: str, *, limit: int = 200, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    query = sa.select(*_VERSION_SUMMARY).where(artifact_versions.c.name == name)
    if cursor:
        (before,) = decode_cursor(cursor)
        query = query.where(artifact_versions.c.version < int(before))
    rows = [dict(r) for r in conn.execute(query.order_by(artifact_versions.c.version.desc()).limit(limit + 1)).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]["version"]) if more and rows else None)


def get_artifact_version(conn: sa.Connection, version_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(artifact_versions).where(artifact_versions.c.id == version_id)).mappings().first()
    return None if row is None else dict(row)


def consumers_of(conn: sa.Connection, version_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    ids = conn.execute(
        sa.select(step_run_artifacts.c.step_run_id)
        .where(step_run_artifacts.c.artifact_version_id == version_id, step_run_artifacts.c.direction == "input")
        .distinct()
        .limit(limit)
    ).scalars().all()
    return list(step_brief(conn, list(ids)).values())


def artifacts_of_steps(conn: sa.Connection, step_ids: list[str], direction: str) -> list[dict[str, Any]]:
    """Artifact version summaries those steps read (``direction="input"``, each with the
    ``consumer`` step run id) or wrote (``"output"``, with the ``producer``)."""
    if not step_ids:
        return []
    role = "consumer" if direction == "input" else "producer"
    rows = conn.execute(
        sa.select(step_run_artifacts.c.step_run_id.label(role), *_VERSION_SUMMARY)
        .join(artifact_versions, artifact_versions.c.id == step_run_artifacts.c.artifact_version_id)
        .where(step_run_artifacts.c.step_run_id.in_(step_ids), step_run_artifacts.c.direction == direction)
    ).mappings()
    return [dict(r) for r in rows]


# -- snapshots -------------------------------------------------------------------------------------

def get_snapshot(conn: sa.Connection, snapshot_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        sa.select(snapshots).where(sa.or_(snapshots.c.id == snapshot_id, snapshots.c.name == snapshot_id))
    ).mappings().first()
    return None if row is None else dict(row)


# -- the change feed ------------------------------------------------------------------------------
# Every write transaction that inserts or updates run or step rows bumps ``change_counter`` once
# and stamps those rows' ``changed`` with its number, and such transactions commit in counter
# order (``_schema.change_counter``). So rows stamped in ``(after, upto]``, read once the counter
# says ``upto``, are exactly what changed since a reader saw ``after``.

_RUN_CHANGE = (
    pipeline_runs.c.id, pipeline_runs.c.name, pipeline_runs.c.pipeline_name, pipeline_runs.c.status,
    pipeline_runs.c.parent_run_id, pipeline_runs.c.invocation_id, pipeline_runs.c.end_time,
    pipeline_runs.c.changed,
)


def change_cursor(conn: sa.Connection) -> int:
    """The number of the last write transaction that changed run or step rows."""
    return int(conn.execute(sa.select(change_counter.c.value).where(change_counter.c.id == 1)).scalar() or 0)


def changed_runs(conn: sa.Connection, after: int, upto: int) -> list[dict[str, Any]]:
    """Runs inserted or updated by the write transactions numbered ``after + 1`` to ``upto``."""
    rows = conn.execute(
        sa.select(*_RUN_CHANGE).where(pipeline_runs.c.changed > after, pipeline_runs.c.changed <= upto)
    ).mappings()
    return [dict(r) for r in rows]


def changed_steps(conn: sa.Connection, after: int, upto: int) -> list[dict[str, Any]]:
    """Step runs inserted or updated by the write transactions numbered ``after + 1`` to ``upto``,
    with their map key (``map``: the group they are drawn in)."""
    rows = conn.execute(
        sa.select(*_STEP_SUMMARY, step_runs.c.changed, map_key(conn).label("map"))
        .where(step_runs.c.changed > after, step_runs.c.changed <= upto)
    ).mappings()
    return [dict(r) for r in rows]


def runs_by_id(conn: sa.Connection, run_ids: list[str]) -> list[dict[str, Any]]:
    """The same summaries as :func:`changed_runs`, of these runs."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start:start + 500]
        found += [dict(r) for r in conn.execute(sa.select(*_RUN_CHANGE).where(pipeline_runs.c.id.in_(chunk))).mappings()]
    return found
