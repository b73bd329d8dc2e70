"""The metadata store: schema, migrations and the buffered single writer (reads: ``_queries``).

The orchestrating process is the only writer. Writes are buffered in memory and committed
in one transaction per flush (by a background thread every ``FLUSH_INTERVAL`` seconds, or
on demand), so a step costs a few rows in a batch rather than a transaction of its own.
A row inserted and then updated before a flush is written once, in its final state.

Artifact version numbers (1, 2, ... per name) are assigned inside the flush transaction
from a per-name counter row, which keeps them unique when several processes share a store.

SQLite is opened in WAL mode with a long busy timeout and ``BEGIN IMMEDIATE`` write
transactions, so concurrent processes queue for the write lock instead of failing with
"database is locked".
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import defaultdict
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy import event

from ._errors import StoreError, mask_secrets
from ._types import EncodedJSON

SCHEMA_VERSION = 3
FLUSH_INTERVAL = 0.2
HEARTBEAT_INTERVAL = 5.0  # a running run's heartbeat is refreshed this often
HEARTBEAT_TIMEOUT = 60.0  # ... and is considered dead when older than this

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
    sa.Column("heartbeat", sa.Float, nullable=True),
    sa.Column("snapshot_id", sa.String(32), nullable=True),  # set when triggered from a snapshot
    sa.Column("start_time", sa.Float, nullable=True),
    sa.Column("end_time", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
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


# Each migration brings the schema from version N-1 to N. New columns and tables for later
# features are added here as numbered steps; existing stores are upgraded on open.
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {
    1: lambda conn: metadata.create_all(conn),
    2: _migrate_2,
    3: lambda conn: step_runs_by_position.create(conn, checkfirst=True),
}


def _update_many(conn: sa.Connection, table: sa.Table, updates: dict[str, dict[str, Any]]) -> int:
    """Apply per-row updates as one executemany per set of changed columns; returns statements."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row_id, changes in updates.items():
        columns = tuple(sorted(changes))
        groups[columns].append({"_row_id": row_id, **{f"_v_{c}": changes[c] for c in columns}})
    for columns, params in groups.items():
        statement = (
            table.update()
            .where(table.c.id == sa.bindparam("_row_id"))
            .values({c: sa.bindparam(f"_v_{c}") for c in columns})
        )
        conn.execute(statement, params)
    return len(groups)


def _dumps(value: Any) -> str:
    if type(value) is EncodedJSON:
        return value.text
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    """A value JSON cannot hold never poisons a flush: numpy scalars and arrays become numbers
    and lists (``tolist``), sets lists, anything else its repr."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return tolist()
        except Exception:
            pass
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    try:  # pydantic models, enums, dates, UUIDs, paths, dataclasses: their JSON form
        from pydantic_core import to_jsonable_python

        return to_jsonable_python(value)
    except Exception:
        return repr(value)


def _dumps_strict(value: Any) -> str:
    """JSON for servers that validate it (PostgreSQL): NaN and infinities become strings."""
    if type(value) is EncodedJSON:
        return value.text
    try:
        return json.dumps(value, allow_nan=False, default=_json_default)
    except ValueError:
        return json.dumps(_finite(json.loads(_dumps(value))), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def redact(url: str) -> str:
    """``url`` with its password masked, for every message and output that shows it."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return mask_secrets(url)


def _one_line(exc: BaseException) -> str:
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())


_LENGTH_LIMITS: dict[str, list[tuple[str, int]]] = {}


def check_lengths(table: sa.Table, row: dict[str, Any]) -> None:
    """Refuse, when queued, a string longer than its column allows.

    A server database (PostgreSQL) rejects such a value, and the whole batch with it, at
    flush time; SQLite would keep it. Checking here gives every store the same rule and the
    caller a clear error instead of a writer that cannot flush.
    """
    limits = _LENGTH_LIMITS.get(table.name)
    if limits is None:
        limits = _LENGTH_LIMITS[table.name] = [
            (c.name, c.type.length) for c in table.columns if getattr(c.type, "length", None)
        ]
    for name, limit in limits:
        value = row.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise StoreError(
                f"{table.name}.{name} {value[:60]!r}... is {len(value)} characters long; "
                f"the metadata store allows at most {limit}: use a shorter name"
            )


def create_engine(url: str) -> sa.Engine:
    try:
        if url.startswith("sqlite"):
            _create_private_sqlite_file(url)
            engine = sa.create_engine(
                url,
                connect_args={"timeout": 120, "check_same_thread": False},
                json_serializer=_dumps,
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        else:
            # A server store (PostgreSQL): no SQLite pragmas; JSON the server accepts; connect
            # attempts that give up after 10 s unless the URL says otherwise.
            connect_args = {}
            parsed = sa.engine.make_url(url)
            if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
                connect_args["connect_timeout"] = 10
            engine = sa.create_engine(
                url, pool_pre_ping=True, json_serializer=_dumps_strict, connect_args=connect_args
            )
    except (sa.exc.ArgumentError, ImportError) as exc:
        hint = ""
        if isinstance(exc, ImportError) or url.startswith("postgres"):
            hint = " (for PostgreSQL: pip install 'unspool[postgres]' and use postgresql+psycopg://user:password@host:5432/db)"
        raise StoreError(
            f"cannot use metadata store URL {redact(url)!r}: {_one_line(exc)}. Set UNSPOOL_STORE_URL to a "
            f"valid SQLAlchemy URL (e.g. sqlite:////path/unspool.db){hint}"
        ) from exc
    return engine


def _create_private_sqlite_file(url: str) -> None:
    """Create a new SQLite store's file readable and writable by its owner only (SQLite gives
    its WAL and shared-memory files the same mode); an existing file is left as it is."""
    try:
        path = sa.engine.make_url(url).database
    except sa.exc.ArgumentError:
        return  # create_engine reports the bad URL
    if not path or path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:
        pass  # a missing folder and the like: SQLite reports it when it opens the file


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=120000")
    cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    if conn.get_execution_options().get("unspool_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


class MetadataStore:
    """Schema owner and buffered writer for one store URL; ``read()`` is for ``_queries``.

    Every write goes through the buffer (``insert_*``, ``update_*``, ``delete_step_run``)
    and lands at the next flush, in one transaction with everything else buffered; writes
    that read first (``queue``) follow it, each in a transaction of its own.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self._write_engine = self.engine.execution_options(unspool_write=True)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._reset_buffers()
        self._pending_handles: list[Any] = []
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()
        self._closed = False
        self.statements = 0  # executed write statements; the benchmark regression guard reads it
        self.rejected: list[dict[str, Any]] = []  # rows the database refused (see _salvage)
        self._beating: set[str] = set()
        self._last_beat = 0.0
        self._operations: list[Any] = []  # _store_writes.Operation, see queue()
        self._migrate()

    # -- schema ----------------------------------------------------------------------------
    def _migrate(self) -> None:
        try:
            # A store that is up to date is only read: opening it never waits for (or blocks)
            # a writer. The write transaction below is taken only when there is a migration.
            with self.read() as conn:
                if self._schema_version(conn) == SCHEMA_VERSION:
                    return
            with self.write() as conn:
                if conn.dialect.name == "postgresql":
                    # Processes opening a new store at once: one migrates, the others wait.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(7164528)"))
                current = self._schema_version(conn)
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[version](conn)
                    conn.execute(schema_version.insert().values(version=version, applied_at=time.time()))
        except sa.exc.DBAPIError as exc:
            raise StoreError(
                f"cannot open the metadata store at {redact(self.url)}: {_one_line(exc.orig)}. Check "
                "UNSPOOL_STORE_URL (or UNSPOOL_HOME) and that the server is reachable"
            ) from exc

    def _schema_version(self, conn: sa.Connection) -> int:
        current = 0
        if conn.dialect.has_table(conn, "schema_version"):  # no reflection: this runs at every open
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the metadata store at {redact(self.url)} has schema version {current}, newer than "
                f"this unspool ({SCHEMA_VERSION}); upgrade unspool"
            )
        return current

    def write(self) -> Any:
        """A connection in a write transaction (``BEGIN IMMEDIATE`` on SQLite): for migrations
        and the flush only; everyone else writes through the buffer."""
        return self._write_engine.begin()

    def read(self) -> sa.Connection:
        """A connection for reading (``_queries``) that sees every write this process made:
        what is still buffered is committed first (a no-op when nothing is)."""
        self.flush()
        return self.engine.connect()

    # -- buffered writes ----------------------------------------------------------------------
    def _reset_buffers(self) -> None:
        self._run_inserts: dict[str, dict[str, Any]] = {}
        self._run_updates: dict[str, dict[str, Any]] = {}
        self._step_inserts: dict[str, dict[str, Any]] = {}
        self._step_updates: dict[str, dict[str, Any]] = {}
        self._artifact_inserts: list[tuple[dict[str, Any], Any]] = []
        self._links: list[dict[str, Any]] = []
        self._pipelines: set[str] = set()
        self._deletes: list[str] = []
        self._snapshots: list[dict[str, Any]] = []

    def add_pipeline(self, name: str) -> None:
        check_lengths(pipelines, {"name": name})
        with self._lock:
            self._pipelines.add(name)
        self._kick()

    def insert_run(self, row: dict[str, Any]) -> None:
        check_lengths(pipeline_runs, row)
        with self._lock:
            self._run_inserts[row["id"]] = row
        self._kick()

    def update_run(self, run_id: str, **changes: Any) -> None:
        with self._lock:
            target = self._run_inserts.get(run_id)
            if target is None:
                target = self._run_updates.setdefault(run_id, {})
            target.update(changes)
        self._kick()

    def insert_step_run(self, row: dict[str, Any]) -> None:
        check_lengths(step_runs, row)
        with self._lock:
            self._step_inserts[row["id"]] = row
        self._kick()

    def update_step_run(self, step_run_id: str, **changes: Any) -> None:
        with self._lock:
            target = self._step_inserts.get(step_run_id)
            if target is None:
                target = self._step_updates.setdefault(step_run_id, {})
            target.update(changes)
        self._kick()

    def insert_artifact_version(self, row: dict[str, Any], handle: Any = None) -> None:
        """Queue a version; ``handle.version`` is set once the flush numbers it."""
        check_lengths(artifact_versions, row)
        with self._lock:
            self._artifact_inserts.append((row, handle))
        self._kick()

    def insert_snapshot(self, row: dict[str, Any]) -> None:
        check_lengths(snapshots, row)
        with self._lock:
            self._snapshots.append(row)
        self._kick()

    def delete_step_run(self, step_run_id: str) -> None:
        """Drop a step run and its links (resume replaces a failed attempt this way)."""
        with self._lock:
            self._deletes.append(step_run_id)
            self._step_inserts.pop(step_run_id, None)
            self._step_updates.pop(step_run_id, None)
        self._kick()

    def queue(self, operation: Any) -> None:
        """Queue a ``_store_writes.Operation``: the next flush runs it, after the rows."""
        with self._lock:
            self._operations.append(operation)
        self._kick()

    # -- heartbeats -------------------------------------------------------------------------
    def beat(self, run_id: str) -> None:
        """Keep ``run_id``'s heartbeat fresh while this process orchestrates it."""
        with self._lock:
            self._beating.add(run_id)
        self._kick()

    def unbeat(self, run_id: str) -> None:
        with self._lock:
            self._beating.discard(run_id)

    def insert_links(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._links.extend(rows)
        self._kick()

    def _kick(self) -> None:
        if self._flusher is None:
            with self._lock:
                if self._flusher is None and not self._closed:
                    self._flusher = threading.Thread(target=self._flush_loop, name="unspool-store-writer", daemon=True)
                    self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                now = time.time()
                if self._beating and now - self._last_beat >= HEARTBEAT_INTERVAL:
                    self._last_beat = now
                    for run_id in list(self._beating):
                        self.update_run(run_id, heartbeat=now)
                self.flush()
            except Exception:  # pragma: no cover - reported by the next explicit flush
                time.sleep(FLUSH_INTERVAL)

    def flush(self) -> None:
        """Commit everything buffered so far: the rows in one transaction, then the operations."""
        with self._flush_lock:
            self._commit()
            with self._lock:
                operations, self._operations = self._operations, []
            for operation in operations:  # writes that read first, each in a transaction of its own
                operation.run(self)

    def _commit(self) -> None:
        with self._lock:
            if not (
                self._run_inserts or self._run_updates or self._step_inserts or self._step_updates
                or self._artifact_inserts or self._links or self._pipelines or self._deletes
                or self._snapshots
            ):
                return
            batch = (
                self._pipelines, self._run_inserts, self._run_updates, self._step_inserts,
                self._step_updates, self._artifact_inserts, self._links, self._deletes,
                self._snapshots,
            )
            self._reset_buffers()
        try:
            self._write_batch(*batch)
        except (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError):
            # The database refused some row. Retrying the batch would refuse it forever and
            # block every later write; write item by item instead and drop only the refused.
            self._salvage(batch)
        except Exception:
            self._requeue(*batch)
            raise

    def _salvage(self, batch: tuple[Any, ...]) -> None:
        pipes, run_ins, run_upd, step_ins, step_upd, arts, links, deletes, snaps = batch
        empty: tuple[Any, ...] = (set(), {}, {}, {}, {}, [], [], [], [])
        singles: list[tuple[str, str, tuple[Any, ...]]] = []

        def single(position: int, value: Any, what: str, key: str) -> None:
            parts = list(empty)
            parts[position] = value
            singles.append((what, key, tuple(parts)))

        for name in pipes:
            single(0, {name}, "pipeline", name)
        for key, row in run_ins.items():
            single(1, {key: row}, "pipeline run", key)
        for key, changes in run_upd.items():
            single(2, {key: changes}, "pipeline run update", key)
        for key in deletes:
            single(7, [key], "step run deletion", key)
        for key, row in step_ins.items():
            single(3, {key: row}, "step run", key)
        for key, changes in step_upd.items():
            single(4, {key: changes}, "step run update", key)
        for row, handle in arts:
            single(5, [(row, handle)], "artifact version", row.get("id", "?"))
        for link in links:
            single(6, [link], "lineage link", f"{link.get('step_run_id')}->{link.get('artifact_version_id')}")
        for snap in snaps:
            single(8, [snap], "snapshot", snap.get("name", "?"))
        for what, key, parts in singles:
            try:
                self._write_batch(*parts)
            except (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError) as exc:
                reason = _one_line(exc.orig if getattr(exc, "orig", None) is not None else exc)
                self.rejected.append({"what": what, "key": key, "error": reason})
                import sys

                print(f"unspool: the metadata store refused {what} {key}: {reason}", file=sys.__stderr__)

    def _requeue(self, pipes: Any, run_ins: Any, run_upd: Any, step_ins: Any, step_upd: Any, arts: Any,
                 links: Any, deletes: Any, snaps: Any) -> None:
        with self._lock:
            self._deletes[:0] = deletes
            self._snapshots[:0] = snaps
            self._pipelines |= pipes
            for key, row in run_ins.items():
                row.update(self._run_inserts.pop(key, {}))
                self._run_inserts[key] = row
            for key, ch in run_upd.items():
                ch.update(self._run_updates.get(key, {}))
                self._run_updates[key] = ch
            for key, row in step_ins.items():
                row.update(self._step_inserts.pop(key, {}))
                self._step_inserts[key] = row
            for key, ch in step_upd.items():
                ch.update(self._step_updates.get(key, {}))
                self._step_updates[key] = ch
            self._artifact_inserts[:0] = arts
            self._links[:0] = links

    def _write_batch(
        self,
        pipes: set[str],
        run_ins: dict[str, dict[str, Any]],
        run_upd: dict[str, dict[str, Any]],
        step_ins: dict[str, dict[str, Any]],
        step_upd: dict[str, dict[str, Any]],
        arts: list[tuple[dict[str, Any], Any]],
        links: list[dict[str, Any]],
        deletes: list[str],
        snaps: list[dict[str, Any]],
    ) -> None:
        now = time.time()
        assigned: list[tuple[Any, int]] = []
        with self.write() as conn:
            n = 0
            if deletes:
                conn.execute(step_run_artifacts.delete().where(step_run_artifacts.c.step_run_id.in_(deletes)))
                conn.execute(step_runs.delete().where(step_runs.c.id.in_(deletes)))
                n += 2
            if pipes:
                existing = set(conn.execute(sa.select(pipelines.c.name).where(pipelines.c.name.in_(pipes))).scalars())
                new = [{"name": p, "created_at": now} for p in sorted(pipes - existing)]
                if new:
                    self._insert_missing(conn, pipelines, new)
                    n += 1
            if run_ins:
                conn.execute(pipeline_runs.insert(), list(run_ins.values()))
                n += 1
            for run_id, changes in run_upd.items():
                conn.execute(pipeline_runs.update().where(pipeline_runs.c.id == run_id).values(**changes))
                n += 1
            if step_ins:
                conn.execute(step_runs.insert(), list(step_ins.values()))
                n += 1
            n += _update_many(conn, step_runs, step_upd)
            if arts:
                by_name: dict[str, list[tuple[dict[str, Any], Any]]] = defaultdict(list)
                for row, handle in arts:
                    by_name[row["name"]].append((row, handle))
                known = set(conn.execute(sa.select(artifacts.c.name).where(artifacts.c.name.in_(list(by_name)))).scalars())
                # Names in one order in every process, so that two flushes locking the same
                # counter rows cannot deadlock on a server database.
                missing = sorted(name for name in by_name if name not in known)
                if missing:
                    self._insert_missing(
                        conn, artifacts, [{"name": name, "latest_version": 0, "created_at": now} for name in missing]
                    )
                    n += 1
                for name, group in sorted(by_name.items()):
                    last = conn.execute(
                        artifacts.update()
                        .where(artifacts.c.name == name)
                        .values(latest_version=artifacts.c.latest_version + len(group))
                        .returning(artifacts.c.latest_version)
                    ).scalar_one()
                    n += 1
                    for offset, (row, handle) in enumerate(group):
                        row["version"] = last - len(group) + 1 + offset
                        if handle is not None:
                            assigned.append((handle, row["version"]))
                conn.execute(artifact_versions.insert(), [row for row, _ in arts])
                n += 1
            if links:
                conn.execute(step_run_artifacts.insert(), links)
                n += 1
            if snaps:
                conn.execute(snapshots.insert(), snaps)
                n += 1
            self.statements += n
        for handle, version in assigned:
            handle.version = version

    def _insert_missing(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Insert rows keyed by ``name``, skipping names another process inserted meanwhile."""
        dialect = conn.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        else:  # pragma: no cover - other databases: plain insert, unique names assumed
            conn.execute(table.insert(), rows)
            return
        conn.execute(insert(table).on_conflict_do_nothing(index_elements=["name"]), rows)

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._wake.set()
        self.engine.dispose()
