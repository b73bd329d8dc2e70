"""What every read module shares: the row type, id chunking, lookup by id/name/prefix,
ZenML-style sorting and paging (``_queries`` re-exports the reads built on these)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ._metadata_store import MetadataStore

Row = Any  # sqlalchemy RowMapping: read-only, keyed by column name
CHUNK = 500  # ids per IN (...) list


def find(store: MetadataStore, table: sa.Table, key: str) -> Row | None:
    """A row by exact id or name, else by a unique id prefix (six characters or more)."""
    with store.read() as conn:
        row = conn.execute(
            sa.select(table).where(sa.or_(table.c.id == key, table.c.name == key))
        ).mappings().first()
        if row is None and len(key) >= 6:
            rows = conn.execute(sa.select(table).where(table.c.id.startswith(key)).limit(2)).mappings().all()
            row = rows[0] if len(rows) == 1 else None
    return row


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


def stored_metadata(conn: sa.Connection, table: sa.Table, column: str, row_id: str) -> dict[str, Any] | None:
    """The metadata JSON of one row (a run, step run or artifact version); None when the row
    does not exist. Read inside the writer's transaction that merges into it."""
    row = conn.execute(sa.select(table.c[column]).where(table.c.id == row_id)).first()
    return None if row is None else dict(row[0] or {})
