"""Reads of snapshots (re-exported by ``_queries``)."""

from __future__ import annotations

import sqlalchemy as sa

from ._metadata_store import MetadataStore, snapshots
from ._queries_common import Row, find


def find_snapshot(store: MetadataStore, name_or_id: str) -> Row | None:
    """A snapshot by id, name or unique id prefix; None when there is none."""
    return find(store, snapshots, name_or_id)


def list_snapshots(store: MetadataStore, pipeline_name: str | None = None) -> list[Row]:
    """Snapshots, newest first."""
    query = sa.select(snapshots).order_by(snapshots.c.created_at.desc())
    if pipeline_name is not None:
        query = query.where(snapshots.c.pipeline_name == pipeline_name)
    with store.read() as conn:
        return list(conn.execute(query).mappings().all())
