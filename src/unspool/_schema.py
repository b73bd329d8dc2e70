"""The metadata store's tables and the migrations that bring an older store up to date.

``_metadata_store`` (the writer) creates and migrates them; ``_queries*`` read them. A new
column or table is a new numbered migration at the end of ``MIGRATIONS``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import sqlalchemy as sa

SCHEMA_VERSION = 5

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)

pipelines = sa.Table(
    "pipelines",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("pipeline_name", sa.String(255), nullable=False, index=True),
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("dynamic", sa.Boolean, nullable=False),
    sa.Column("parent_run_id", sa.String(32), nullable=True, index=True),
    sa.Column("invocation_id", sa.String(255), nullable=True),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("dag", sa.JSON, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("run_metadata", sa.JSON, nullable=False),
    sa.Column("orchestrator", sa.String(255), nullable=True),
    sa.Column("owner", sa.String(255), nullable=True),  # the claim (_ownership.py)
    sa.Column("heartbeat", sa.Float, nullable=True),
    sa.Column("snapshot_id", sa.String(32), nullable=True),  # set when triggered from a snapshot
    sa.Column("start_time", sa.Float, nullable=True),
    sa.Column("end_time", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("changed", sa.BigInteger, nullable=True, index=True),  # the change cursor (change_counter)
)

step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("pipeline_runs.id"), nullable=False),
    sa.Column("invocation_id", sa.String(255), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("step_name", sa.String(255), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("upstream", sa.JSON, nullable=False),
    sa.Column("cache_key", sa.String(64), nullable=True, index=True),
    sa.Column("original_step_run_id", sa.String(32), nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("attempts", sa.JSON, nullable=False),
    sa.Column("step_metadata", sa.JSON, nullable=False),
    sa.Column("logs_uri", sa.Text, nullable=True),
    sa.Column("start_time", sa.Float, nullable=True),
    sa.Column("end_time", sa.Float, nullable=True),
    sa.Column("changed", sa.BigInteger, nullable=True, index=True),  # the change cursor (change_counter)
    sa.UniqueConstraint("run_id", "invocation_id", name="uq_step_run_invocation"),
)
# Pages of a run's steps never sort a whole run; its counts by status are read from this index.
step_runs_by_position = sa.Index("ix_step_runs_run_position", *(step_runs.c[n] for n in ("run_id", "position", "status")))

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("latest_version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

artifact_versions = sa.Table(
    "artifact_versions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), sa.ForeignKey("artifacts.name"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("data_type", sa.String(255), nullable=False),
    sa.Column("materializer", sa.String(255), nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("item_count", sa.Integer, nullable=True),
    sa.Column("producer_step_run_id", sa.String(32), nullable=True, index=True),
    sa.Column("run_id", sa.String(32), nullable=True, index=True),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("artifact_metadata", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("name", "version", name="uq_artifact_version"),
)

step_run_artifacts = sa.Table(
    "step_run_artifacts",
    metadata,
    sa.Column("step_run_id", sa.String(32), nullable=False, index=True),
    sa.Column("artifact_version_id", sa.String(32), nullable=False, index=True),
    sa.Column("direction", sa.String(8), nullable=False),  # "input" | "output"
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("item_index", sa.Integer, nullable=True),
)

# The change cursor: one row, whose ``value`` every write transaction that inserts or updates
# run or step rows bumps once (``UPDATE ... RETURNING``, which also holds the row's lock until
# commit) and stamps into those rows' ``changed``. Write transactions are serialised on it
# (SQLite's one write lock; the row lock on PostgreSQL), so they commit in counter order: a
# reader that has seen ``value`` N has seen every row stamped N or less, whatever the clocks.
# Rows written before migration 5 have ``changed`` NULL. Deleted rows leave no stamp.
change_counter = sa.Table(
    "change_counter",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("pipeline_name", sa.String(255), nullable=False, index=True),
    sa.Column("source", sa.Text, nullable=False),  # module name, or absolute path of a .py file
    sa.Column("source_file", sa.Text, nullable=True),  # the module's file, a fallback for loading
    sa.Column("attribute", sa.String(255), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


def _migrate_2(conn: sa.Connection) -> None:
    """Snapshots: the ``snapshots`` table and ``pipeline_runs.snapshot_id``.

    Migration 1 creates every table of ``metadata``, so on a new store these already exist;
    this step only adds what a version-1 store lacks.
    """
    snapshots.create(conn, checkfirst=True)
    columns = {c["name"] for c in sa.inspect(conn).get_columns("pipeline_runs")}
    if "snapshot_id" not in columns:
        conn.execute(sa.text("ALTER TABLE pipeline_runs ADD COLUMN snapshot_id VARCHAR(32)"))


def _migrate_3(conn: sa.Connection) -> None:
    """Run ownership: ``pipeline_runs.owner`` (``_owner.py``)."""
    if "owner" not in {c["name"] for c in sa.inspect(conn).get_columns("pipeline_runs")}:
        conn.execute(sa.text("ALTER TABLE pipeline_runs ADD COLUMN owner VARCHAR(255)"))


def _migrate_5(conn: sa.Connection) -> None:
    """The change cursor: ``changed`` (indexed) on runs and step runs, and ``change_counter``."""
    change_counter.create(conn, checkfirst=True)
    if conn.execute(sa.select(sa.func.count()).select_from(change_counter)).scalar() == 0:
        conn.execute(change_counter.insert().values(id=1, value=0))
    inspector = sa.inspect(conn)
    for table in (pipeline_runs, step_runs):
        if "changed" not in {c["name"] for c in inspector.get_columns(table.name)}:
            conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN changed BIGINT"))
        index = next(i for i in table.indexes if i.name == f"ix_{table.name}_changed")
        index.create(conn, checkfirst=True)


# The tables a flush writes, by name (``_batch_sql.write_batch``).
TABLES = SimpleNamespace(
    pipelines=pipelines, pipeline_runs=pipeline_runs, step_runs=step_runs, artifacts=artifacts,
    artifact_versions=artifact_versions, step_run_artifacts=step_run_artifacts, snapshots=snapshots,
    change_counter=change_counter,
)

# Each migration brings the schema from version N-1 to N. New columns and tables for later
# features are added here as numbered steps; existing stores are upgraded on open.
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    1: lambda conn: metadata.create_all(conn),
    2: _migrate_2,
    3: _migrate_3,
    4: lambda conn: step_runs_by_position.create(conn, checkfirst=True),
    5: _migrate_5,
}
