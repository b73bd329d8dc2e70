"""One flush's batch as the statements of one write transaction.

The writer (``_metadata_store.MetadataStore``) collects rows in memory; :func:`write_batch`
turns a batch into SQL through one of two statement runners with the same few operations:

* :class:`CoreStatements`, SQLAlchemy Core on a connection: server databases (PostgreSQL);
* :class:`SQLiteStatements`, the ``sqlite3`` module on the writer's own connection to a
  SQLite file. A step's completion is committed before anything uses its result, so a chain
  of steps costs one transaction per step; there SQLAlchemy's per-statement machinery (and
  its pool's checkout and reset around every transaction) cost several times the SQL itself.

Both write the same values: JSON columns as JSON text (``None`` as ``null``), the rest as is.

A flush that writes run or step rows first bumps the change counter (``_schema.change_counter``)
once and stamps its number into every run and step row it inserts or updates (``changed``):
one statement per flush, which gives readers an exact cursor of what changed (the dashboard's
watcher) whatever the writers' clocks say.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import defaultdict
from typing import Any, Callable, Iterator, NamedTuple, Protocol

import sqlalchemy as sa

# Errors that mean "the database refused this row", whichever runner raised them: the
# writer retries the batch item by item and drops only what is refused.
ROW_REFUSED: tuple[type[BaseException], ...] = (
    sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError,
    sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError,
)


# A lineage link as the writer queues it: a tuple in this column order, not a dict (a reduce
# over a million mapped outputs queued a million of them at once, 272 bytes each as dicts).
LINK_COLUMNS = ("step_run_id", "artifact_version_id", "direction", "name", "position", "item_index")
Link = tuple[str, str, str, str, int, "int | None"]


class Batch(NamedTuple):
    pipelines: set[str]
    run_inserts: dict[str, dict[str, Any]]
    run_updates: dict[str, dict[str, Any]]
    step_inserts: dict[str, dict[str, Any]]
    step_updates: dict[str, dict[str, Any]]
    artifact_inserts: list[tuple[dict[str, Any], Any]]
    links: list[Link]
    deletes: list[str]
    snapshots: list[dict[str, Any]]


class Statements(Protocol):
    def insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None: ...

    def insert_rows(self, table: sa.Table, columns: tuple[str, ...], rows: list[Any]) -> None:
        """Insert ``rows`` given as tuples of ``columns``."""
        ...

    def insert_missing(self, table: sa.Table, rows: list[dict[str, Any]]) -> None: ...

    def existing(self, table: sa.Table, names: list[str]) -> set[str]: ...

    def update(self, table: sa.Table, updates: dict[str, dict[str, Any]]) -> int: ...

    def delete_step_runs(self, links: sa.Table, steps: sa.Table, ids: list[str]) -> None: ...

    def bump_version(self, table: sa.Table, name: str, by: int) -> int | None: ...

    def next_change(self, counter: sa.Table) -> int:
        """Bump the change counter; its lock is held until the transaction ends."""
        ...

    def owners(self, table: sa.Table, ids: list[str]) -> list[tuple[str, str, str | None, str | None]]:
        """(id, name, owner, orchestrator) of these runs, locked until the transaction ends."""
        ...


def write_batch(st: Statements, batch: Batch, tables: Any, now: float) -> tuple[int, list[tuple[Any, int]]]:
    """Write ``batch``; returns the statements executed and the (handle, version) pairs to
    publish once the transaction committed. ``tables`` is the schema module."""
    n = 0
    assigned: list[tuple[Any, int]] = []
    if batch.deletes:
        st.delete_step_runs(tables.step_run_artifacts, tables.step_runs, batch.deletes)
        n += 2
    if batch.pipelines:
        names = sorted(batch.pipelines)
        new = [{"name": p, "created_at": now} for p in names if p not in st.existing(tables.pipelines, names)]
        if new:
            st.insert_missing(tables.pipelines, new)
            n += 1
    if batch.run_inserts or batch.run_updates or batch.step_inserts or batch.step_updates:
        change = st.next_change(tables.change_counter)
        n += 1
        for rows in (batch.run_inserts, batch.run_updates, batch.step_inserts, batch.step_updates):
            for row in rows.values():
                row["changed"] = change  # a retried or salvaged row is stamped again, with its own flush's number
    if batch.run_inserts:
        st.insert(tables.pipeline_runs, list(batch.run_inserts.values()))
        n += 1
    n += st.update(tables.pipeline_runs, batch.run_updates)
    if batch.step_inserts:
        st.insert(tables.step_runs, list(batch.step_inserts.values()))
        n += 1
    n += st.update(tables.step_runs, batch.step_updates)
    if batch.artifact_inserts:
        by_name: dict[str, list[tuple[dict[str, Any], Any]]] = defaultdict(list)
        for row, handle in batch.artifact_inserts:
            by_name[row["name"]].append((row, handle))
        # Names in one order in every process, so that two flushes locking the same counter
        # rows cannot deadlock on a server database. A name's counter row is made the first
        # time the name is seen (bumping a missing row changes nothing and says so).
        for name in sorted(by_name):
            group = by_name[name]
            last = st.bump_version(tables.artifacts, name, len(group))
            n += 1
            if last is None:
                st.insert_missing(tables.artifacts, [{"name": name, "latest_version": 0, "created_at": now}])
                last = st.bump_version(tables.artifacts, name, len(group))
                n += 2
                assert last is not None  # the row exists now, made here or by another process
            for offset, (row, handle) in enumerate(group):
                row["version"] = last - len(group) + 1 + offset
                if handle is not None:
                    assigned.append((handle, row["version"]))
        st.insert(tables.artifact_versions, [row for row, _ in batch.artifact_inserts])
        n += 1
    if batch.links:
        st.insert_rows(tables.step_run_artifacts, LINK_COLUMNS, batch.links)
        n += 1
    if batch.snapshots:
        st.insert(tables.snapshots, batch.snapshots)
        n += 1
    return n, assigned


def singles(batch: Batch) -> Iterator[tuple[str, str, Batch]]:
    """Each item of ``batch`` as a batch of its own, with what it is and its key: a batch the
    database refused is written again item by item, so that only the refused items are lost."""
    empty = Batch(set(), {}, {}, {}, {}, [], [], [], [])
    for name in batch.pipelines:
        yield "pipeline", name, empty._replace(pipelines={name})
    for key, row in batch.run_inserts.items():
        yield "pipeline run", key, empty._replace(run_inserts={key: row})
    for key, changes in batch.run_updates.items():
        yield "pipeline run update", key, empty._replace(run_updates={key: changes})
    for key in batch.deletes:
        yield "step run deletion", key, empty._replace(deletes=[key])
    for key, row in batch.step_inserts.items():
        yield "step run", key, empty._replace(step_inserts={key: row})
    for key, changes in batch.step_updates.items():
        yield "step run update", key, empty._replace(step_updates={key: changes})
    for row, handle in batch.artifact_inserts:
        yield "artifact version", row.get("id", "?"), empty._replace(artifact_inserts=[(row, handle)])
    for link in batch.links:
        yield ("lineage link", f"{link[0]}->{link[1]}",
               empty._replace(links=[link]))
    for snap in batch.snapshots:
        yield "snapshot", snap.get("name", "?"), empty._replace(snapshots=[snap])


# -- SQLAlchemy Core -------------------------------------------------------------------------------


class CoreStatements:
    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        self.conn.execute(table.insert(), rows)

    def insert_rows(self, table: sa.Table, columns: tuple[str, ...], rows: list[Any]) -> None:
        self.conn.execute(table.insert(), [dict(zip(columns, row)) for row in rows])

    def insert_missing(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        insert_missing(self.conn, table, rows)

    def existing(self, table: sa.Table, names: list[str]) -> set[str]:
        return set(self.conn.execute(sa.select(table.c.name).where(table.c.name.in_(names))).scalars())

    def update(self, table: sa.Table, updates: dict[str, dict[str, Any]]) -> int:
        groups = _by_columns(updates)
        for columns, params in groups.items():
            statement = (
                table.update()
                .where(table.c.id == sa.bindparam("_row_id"))
                .values({c: sa.bindparam(f"_v_{c}") for c in columns})
            )
            self.conn.execute(statement, [{"_row_id": key, **{f"_v_{c}": v for c, v in zip(columns, values)}}
                                          for key, values in params])
        return len(groups)

    def owners(self, table: sa.Table, ids: list[str]) -> list[tuple[str, str, str | None, str | None]]:
        c = table.c
        rows = self.conn.execute(sa.select(c.id, c.name, c.owner, c.orchestrator).where(c.id.in_(ids)).with_for_update())
        return [tuple(row) for row in rows]  # type: ignore[misc]

    def delete_step_runs(self, links: sa.Table, steps: sa.Table, ids: list[str]) -> None:
        self.conn.execute(links.delete().where(links.c.step_run_id.in_(ids)))
        self.conn.execute(steps.delete().where(steps.c.id.in_(ids)))

    def bump_version(self, table: sa.Table, name: str, by: int) -> int | None:
        return self.conn.execute(
            table.update().where(table.c.name == name)
            .values(latest_version=table.c.latest_version + by)
            .returning(table.c.latest_version)
        ).scalar()

    def next_change(self, counter: sa.Table) -> int:
        return next_change(self.conn, counter)


def next_change(conn: sa.Connection, counter: sa.Table) -> int:
    """Bump the change counter in ``conn``'s write transaction and return its new value: the
    stamp (``changed``) of the run and step rows this transaction writes. On PostgreSQL the
    UPDATE locks the counter row until commit, so stamps commit in order."""
    value = conn.execute(
        counter.update().where(counter.c.id == 1).values(value=counter.c.value + 1).returning(counter.c.value)
    ).scalar()
    assert value is not None, "the change counter row is made by migration 5"
    return int(value)


def insert_missing(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
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


def _by_columns(updates: dict[str, dict[str, Any]]) -> dict[tuple[str, ...], list[tuple[str, list[Any]]]]:
    """Per-row changes grouped by the set of columns they change: one executemany per group."""
    groups: dict[tuple[str, ...], list[tuple[str, list[Any]]]] = defaultdict(list)
    for row_id, changes in updates.items():
        columns = tuple(sorted(changes))
        groups[columns].append((row_id, [changes[c] for c in columns]))
    return groups


# -- sqlite3 -----------------------------------------------------------------------------------------


class SQLiteStatements:
    def __init__(self, cursor: sqlite3.Cursor, dumps: Callable[[Any], str]) -> None:
        self.cursor = cursor
        self.dumps = dumps

    def insert(self, table: sa.Table, rows: list[dict[str, Any]], verb: str = "INSERT") -> None:
        keys = set(rows[0]).union(*rows[1:]) if len(rows) > 1 else set(rows[0])
        names, json_columns = _columns(table)
        columns = [c for c in names if c in keys]
        dumps = self.dumps
        values = [
            [dumps(row[c]) if c in json_columns and c in row else row.get(c) for c in columns]
            for row in rows
        ]
        sql = f"{verb} INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        self.cursor.executemany(sql, values)

    def insert_missing(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        self.insert(table, rows, verb="INSERT OR IGNORE")

    def insert_rows(self, table: sa.Table, columns: tuple[str, ...], rows: list[Any]) -> None:
        """Plain values only (no JSON columns): the tuples go to ``executemany`` as they are."""
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        self.cursor.executemany(sql, rows)

    def existing(self, table: sa.Table, names: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            sql = f"SELECT name FROM {table.name} WHERE name IN ({', '.join('?' * len(chunk))})"
            found.update(name for (name,) in self.cursor.execute(sql, chunk))
        return found

    def update(self, table: sa.Table, updates: dict[str, dict[str, Any]]) -> int:
        json_columns = _columns(table)[1]
        groups = _by_columns(updates)
        dumps = self.dumps
        for columns, params in groups.items():
            sql = f"UPDATE {table.name} SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"
            self.cursor.executemany(sql, [
                [dumps(v) if c in json_columns else v for c, v in zip(columns, values)] + [key]
                for key, values in params
            ])
        return len(groups)

    def owners(self, table: sa.Table, ids: list[str]) -> list[tuple[str, str, str | None, str | None]]:
        # the transaction holds SQLite's one write lock already: nobody claims meanwhile
        marks = ", ".join("?" * len(ids))
        return self.cursor.execute(
            f"SELECT id, name, owner, orchestrator FROM {table.name} WHERE id IN ({marks})", ids
        ).fetchall()

    def delete_step_runs(self, links: sa.Table, steps: sa.Table, ids: list[str]) -> None:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            self.cursor.execute(f"DELETE FROM {links.name} WHERE step_run_id IN ({marks})", chunk)
            self.cursor.execute(f"DELETE FROM {steps.name} WHERE id IN ({marks})", chunk)

    def bump_version(self, table: sa.Table, name: str, by: int) -> int | None:
        self.cursor.execute(
            f"UPDATE {table.name} SET latest_version = latest_version + ? WHERE name = ? RETURNING latest_version",
            (by, name),
        )
        row = self.cursor.fetchone()
        return None if row is None else int(row[0])

    def next_change(self, counter: sa.Table) -> int:
        self.cursor.execute(f"UPDATE {counter.name} SET value = value + 1 WHERE id = 1 RETURNING value")
        row = self.cursor.fetchone()
        assert row is not None, "the change counter row is made by migration 5"
        return int(row[0])


_COLUMNS: dict[str, tuple[list[str], frozenset[str]]] = {}


def _columns(table: sa.Table) -> tuple[list[str], frozenset[str]]:
    """A table's column names in order, and those holding JSON (looked up once per table)."""
    found = _COLUMNS.get(table.name)
    if found is None:
        found = _COLUMNS[table.name] = (
            [c.name for c in table.c], frozenset(c.name for c in table.c if isinstance(c.type, sa.JSON))
        )
    return found


def configure_sqlite(conn: sqlite3.Connection) -> None:
    """How every connection to a SQLite store is set up (the writer's own and SQLAlchemy's):
    transactions begun explicitly (``BEGIN IMMEDIATE`` to write), WAL with ``synchronous=NORMAL``
    (a commit survives the process being killed), and a long busy timeout."""
    conn.isolation_level = None
    cursor = conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=120000")
    cursor.close()


class SQLiteWriter:
    """The writer's own ``sqlite3`` connection to a SQLite file, opened on first use.

    Used under the writer's flush lock only, so one connection serves every thread; it is
    configured as the SQLAlchemy engine's connections are (WAL, ``synchronous=NORMAL``: a
    commit survives the process being killed; a long busy timeout) and takes the write lock
    at ``BEGIN IMMEDIATE``.
    """

    def __init__(self, path: str, dumps: Callable[[Any], str]) -> None:
        self.path = path
        self.dumps = dumps
        self._conn: sqlite3.Connection | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SQLiteStatements]:
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=120, check_same_thread=False)
            configure_sqlite(conn)
            self._conn = conn
        cursor = conn.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield SQLiteStatements(cursor, self.dumps)
            cursor.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
