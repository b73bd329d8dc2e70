"""The metadata store: opening and migrating it, and its buffered single writer (tables:
``_schema``; reads: ``_queries``).

The orchestrating process is the only writer. Writes are buffered in memory and committed
in one transaction per flush (by a background thread every ``FLUSH_INTERVAL`` seconds, or
on demand), so a step costs a few rows in a batch rather than a transaction of its own.
A row inserted and then updated before a flush is written once, in its final state.
Claiming a run (``_ownership``) is the one write outside the buffer; every flush first checks,
in its transaction, that the runs this process drives are still its own (``own``).

Artifact version numbers (1, 2, ... per name) are assigned inside the flush transaction
from a per-name counter row, which keeps them unique when several processes share a store.

SQLite is opened in WAL mode with a long busy timeout and ``BEGIN IMMEDIATE`` write
transactions, so concurrent processes queue for the write lock instead of failing with
"database is locked".
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy import event

from ._batch_sql import (
    ROW_REFUSED,
    Batch,
    CoreStatements,
    Link,
    SQLiteWriter,
    Statements,
    configure_sqlite,
    next_change,
    singles,
    write_batch,
)
from ._errors import RunOwnershipLostError, StoreError, mask_secrets
from ._schema import (  # noqa: F401 - the tables are read from here by the query modules
    MIGRATIONS,
    SCHEMA_VERSION,
    TABLES,
    artifact_versions,
    artifacts,
    change_counter,
    metadata,
    pipeline_runs,
    pipelines,
    schema_version,
    snapshots,
    step_run_artifacts,
    step_runs,
)
from ._store_json import _dumps, _dumps_strict

FLUSH_INTERVAL = 0.2
HEARTBEAT_INTERVAL = 5.0  # a running run's heartbeat is refreshed this often
HEARTBEAT_TIMEOUT = 60.0  # ... and another host's owner is considered dead when older than this
RETRY_WINDOW = 30.0  # a write refused for a passing reason is retried this long, then the store fails
_LIVE = ("initializing", "running")

# What a database says when a write cannot succeed however often it is retried.
_LASTING = ("is full", "disk full", "no space left", "readonly", "read-only", "disk i/o error", "permission denied",
            "unable to open database file", "malformed", "out of memory")



def next_change_in(conn: sa.Connection) -> int:
    """For the few writes outside the buffer (``_ownership``, ``_store_writes``): bump the
    change counter in ``conn``'s write transaction; the run and step rows it updates are
    stamped with the number (``changed``), as the flush stamps its rows."""
    return next_change(conn, change_counter)


def redact(url: str) -> str:
    """``url`` with its password masked, for every message and output that shows it."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return mask_secrets(url)


def _lasting(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", None) or exc).lower()
    return any(word in text for word in _LASTING)


def _refused(url: str, exc: BaseException) -> StoreError:
    cause = _one_line(getattr(exc, "orig", None) or exc)
    return StoreError(
        f"the metadata store at {redact(url)} refused a write: {cause}. The run was stopped; what it "
        "recorded before stays. Fix the store (free space, permissions, connection) and resume the run"
    )


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


def _sqlite_file(url: str) -> str | None:
    """The file of a SQLite store URL; None for another database, memory or a ``file:`` URI."""
    if not url.startswith("sqlite"):
        return None
    try:
        path = sa.engine.make_url(url).database
    except sa.exc.ArgumentError:
        return None  # create_engine reports the bad URL
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return path


def _create_private_sqlite_file(url: str) -> None:
    """Create a new SQLite store's file readable and writable by its owner only (SQLite gives
    its WAL and shared-memory files the same mode); an existing file is left as it is."""
    path = _sqlite_file(url)
    if path is None or os.path.exists(path):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:
        pass  # a missing folder and the like: SQLite reports it when it opens the file


def _sqlite_writer(url: str) -> SQLiteWriter | None:
    """The flush's own sqlite3 connection for a SQLite file store (see ``_batch_sql``)."""
    path = _sqlite_file(url)
    return None if path is None else SQLiteWriter(path, _dumps)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    configure_sqlite(dbapi_connection)


def _sqlite_on_begin(conn: sa.Connection) -> None:
    if conn.get_execution_options().get("unspool_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


class MetadataStore:
    """Schema owner and buffered writer for one store URL; ``read()`` is for ``_queries``.

    Every write goes through the buffer (``insert_*``, ``update_*``, ``delete_step_run``)
    and lands at the next flush, in one transaction with everything else buffered.
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
        self.statements = 0  # executed write statements; the overhead guard reads them
        self.transactions = 0  # ... and committed write transactions (flushes)
        self._sqlite = _sqlite_writer(url)
        self.rejected: list[dict[str, Any]] = []  # rows the database refused (see _salvage)
        self._beating: set[str] = set()
        self._last_beat = 0.0
        self._operations: list[Any] = []  # _store_writes.Operation, see queue()
        # Group commit: every buffered write takes the next number (``written``);
        # ``committed`` is the highest number a finished flush included (see ``durable``).
        self.written = 0
        self.committed = 0
        # A write the database refused for a reason that will not go away (see ``_refused``):
        # set once, then every write is dropped and ``flush``/``durable`` raise it.
        self.failure: StoreError | None = None
        self._failure_listeners: list[Callable[[StoreError], None]] = []
        self.owned: dict[str, str] = {}  # root run id -> this process's claim on it (own)
        self.lost: dict[str, str] = {}  # root run id -> why its claim was taken over
        self._on_lost: dict[str, Callable[[str], None]] = {}
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
        what is still buffered is committed first (a no-op when nothing is; skipped once the
        store failed, so that what it holds can still be read)."""
        if self.failure is None:
            self.flush()
        return self.engine.connect()

    # -- buffered writes ----------------------------------------------------------------------
    def _reset_buffers(self) -> None:
        self._run_inserts: dict[str, dict[str, Any]] = {}
        self._run_updates: dict[str, dict[str, Any]] = {}
        self._step_inserts: dict[str, dict[str, Any]] = {}
        self._step_updates: dict[str, dict[str, Any]] = {}
        self._artifact_inserts: list[tuple[dict[str, Any], Any]] = []
        self._links: list[Link] = []
        self._pipelines: set[str] = set()
        self._deletes: list[str] = []
        self._snapshots: list[dict[str, Any]] = []

    def add_pipeline(self, name: str) -> None:
        check_lengths(pipelines, {"name": name})
        with self._lock:
            self.written += 1
            self._pipelines.add(name)
        self._kick()

    def insert_run(self, row: dict[str, Any]) -> None:
        check_lengths(pipeline_runs, row)
        with self._lock:
            self.written += 1
            self._run_inserts[row["id"]] = row
        self._kick()

    def update_run(self, run_id: str, **changes: Any) -> None:
        with self._lock:
            self.written += 1
            target = self._run_inserts.get(run_id)
            if target is None:
                target = self._run_updates.setdefault(run_id, {})
            target.update(changes)
        self._kick()

    def insert_step_run(self, row: dict[str, Any]) -> None:
        check_lengths(step_runs, row)
        with self._lock:
            self.written += 1
            self._step_inserts[row["id"]] = row
        self._kick()

    def update_step_run(self, step_run_id: str, **changes: Any) -> None:
        with self._lock:
            self.written += 1
            target = self._step_inserts.get(step_run_id)
            if target is None:
                target = self._step_updates.setdefault(step_run_id, {})
            target.update(changes)
        self._kick()

    def insert_artifact_version(self, row: dict[str, Any], handle: Any = None) -> None:
        """Queue a version; ``handle.version`` is set once the flush numbers it."""
        check_lengths(artifact_versions, row)
        with self._lock:
            self.written += 1
            self._artifact_inserts.append((row, handle))
        self._kick()

    def insert_snapshot(self, row: dict[str, Any]) -> None:
        check_lengths(snapshots, row)
        with self._lock:
            self.written += 1
            self._snapshots.append(row)
        self._kick()

    def queue(self, operation: Any) -> None:
        """Queue a ``_store_writes.Operation``: the next flush runs it, after the rows."""
        with self._lock:
            self._operations.append(operation)
        self._kick()

    def delete_step_run(self, step_run_id: str) -> None:
        """Drop a step run and its links (resume replaces a failed attempt this way)."""
        with self._lock:
            self.written += 1
            self._deletes.append(step_run_id)
            self._step_inserts.pop(step_run_id, None)
            self._step_updates.pop(step_run_id, None)
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

    # -- ownership (_ownership.py claims runs; the flush checks that the claim holds) -----------
    def own(self, run_id: str, owner: str, on_lost: Callable[[str], None]) -> None:
        """Check in every flush transaction that ``owner`` still owns ``run_id``. Once it does
        not, ``on_lost(reason)`` is called (in a thread of its own) and this store writes
        nothing more: that flush and every later one raise RunOwnershipLostError."""
        self.owned[run_id] = owner
        self._on_lost[run_id] = on_lost

    def disown(self, run_id: str) -> None:
        self.owned.pop(run_id, None)
        self._on_lost.pop(run_id, None)

    def _check_owned(self, st: Statements) -> None:
        """Inside the flush transaction, before any write: refuse the batch if a run this process
        drives was claimed by someone else (the row lock orders this against a claim)."""
        if not self.lost and self.owned:
            owned = dict(self.owned)
            for run_id, name, owner, orchestrator in st.owners(pipeline_runs, list(owned)):
                if owner != owned[run_id]:
                    self.lost[run_id] = (
                        f"run {name!r} ({run_id}) was taken over by orchestrator {orchestrator} "
                        f"while this process (pid {os.getpid()}) drove it; this process stopped it and wrote "
                        "nothing more"
                    )
                    callback = self._on_lost.pop(run_id, None)
                    if callback is not None:
                        threading.Thread(target=callback, args=(self.lost[run_id],), daemon=True).start()
        if self.lost:
            raise RunOwnershipLostError(next(iter(self.lost.values())))

    def insert_links(self, rows: list[Link]) -> None:
        with self._lock:
            self.written += 1
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
            if self.failure is not None:
                continue  # reported once, to the listeners and to every explicit flush
            try:
                now = time.time()
                if self._beating and now - self._last_beat >= HEARTBEAT_INTERVAL:
                    self._last_beat = now
                    for run_id in list(self._beating):
                        self.update_run(run_id, heartbeat=now)
                self.flush()
            except Exception:  # noqa: BLE001 - a lasting refusal is ``self.failure``, told to the listeners
                time.sleep(FLUSH_INTERVAL)

    def flush(self) -> None:
        """Commit everything buffered so far, in one transaction.

        A write the database refuses for a passing reason (a lock held past the busy timeout,
        a dropped connection) is retried for ``RETRY_WINDOW`` seconds; one it refuses for a
        lasting reason (a full disk, a read-only file) or past the retries makes the store
        *failed*: the run's listeners are told at once and every later flush raises the same
        :class:`StoreError` (see ``on_failure``). Queued operations (``queue``) run after
        the rows, each in a transaction of its own.
        """
        with self._flush_lock:
            self._commit()
            with self._lock:
                operations, self._operations = self._operations, []
            for operation in operations:  # writes that read first, each in a transaction of its own
                operation.run(self)

    def durable(self, upto: int | None = None) -> None:
        """Return once the writes numbered up to ``upto`` (default: every write buffered before
        this call) are committed.

        Group commit: whoever holds the flush lock commits everything buffered so far, the
        writes of the threads queued behind it included, so concurrent callers share one
        transaction and a caller whose writes a flush already took returns without one.
        """
        target = self.written if upto is None else upto
        if self.committed >= target and self.failure is None:
            return
        with self._flush_lock:
            if self.committed < target or self.failure is not None:
                self._commit()

    def on_failure(self, listener: Callable[[StoreError], None]) -> Callable[[], None]:
        """Call ``listener`` (in a thread of its own) when the store fails; returns an unsubscribe."""
        with self._lock:
            self._failure_listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._failure_listeners:
                    self._failure_listeners.remove(listener)

        return unsubscribe

    def clear_failure(self) -> None:
        """Forget an earlier failure so that a new run tries again (its first flush finds out)."""
        self.failure = None

    def _commit(self) -> None:
        if self.failure is not None:
            raise self.failure
        first_error = None
        delay = 0.05
        while True:
            with self._lock:
                upto = self.written
                if not (
                    self._run_inserts or self._run_updates or self._step_inserts or self._step_updates
                    or self._artifact_inserts or self._links or self._pipelines or self._deletes
                    or self._snapshots
                ):
                    self.committed = upto
                    return
                batch = (
                    self._pipelines, self._run_inserts, self._run_updates, self._step_inserts,
                    self._step_updates, self._artifact_inserts, self._links, self._deletes,
                    self._snapshots,
                )
                self._reset_buffers()
            try:
                self._write_batch(*batch)
            except RunOwnershipLostError:
                with self._lock:
                    self._reset_buffers()  # another process owns the run now: write nothing more
                raise
            except ROW_REFUSED:
                # The database refused some row. Retrying the batch would refuse it forever and
                # block every later write; write item by item instead and drop only the refused.
                self._salvage(batch)
            except Exception as exc:
                self._requeue(*batch)
                now = time.monotonic()
                first_error = first_error if first_error is not None else now
                if _lasting(exc) or now - first_error > RETRY_WINDOW:
                    raise self._fail(exc) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.committed = upto
            return

    def _fail(self, exc: BaseException) -> StoreError:
        failure = _refused(self.url, exc)
        with self._lock:
            self.failure = failure
            self._reset_buffers()
            listeners = list(self._failure_listeners)
        for listener in listeners:
            threading.Thread(target=listener, args=(failure,), name="unspool-store-failed", daemon=True).start()
        return failure

    def _salvage(self, batch: tuple[Any, ...]) -> None:
        for what, key, parts in singles(Batch(*batch)):
            try:
                self._write_batch(*parts)
            except ROW_REFUSED as exc:
                reason = _one_line(exc.orig if getattr(exc, "orig", None) is not None else exc)
                self.rejected.append({"what": what, "key": key, "error": reason})
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

    def _write_batch(self, *parts: Any) -> None:
        batch = Batch(*parts)
        now = time.time()
        if self.lost:  # this process lost a run (see own): not even a transaction
            raise RunOwnershipLostError(next(iter(self.lost.values())))
        if self._sqlite is not None:
            with self._sqlite.transaction() as st:
                self._check_owned(st)
                n, assigned = write_batch(st, batch, TABLES, now)
        else:
            with self.write() as conn:
                core = CoreStatements(conn)
                self._check_owned(core)
                n, assigned = write_batch(core, batch, TABLES, now)
        self.statements += n
        self.transactions += 1
        for handle, version in assigned:
            handle.version = version

    def close(self) -> None:
        try:
            self.flush()
        except StoreError:
            if self.failure is None:
                raise  # a failed store was reported when it failed
        self._closed = True
        self._wake.set()
        if self._sqlite is not None:
            self._sqlite.close()
        self.engine.dispose()
