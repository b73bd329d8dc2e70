"""Deleting a pipeline run (``Client().delete_pipeline_run``).

The run, its child runs, their step runs and lineage rows are removed by one operation of
the store's buffered writer (``_store_writes.RunDeletion``), in one transaction. An artifact version the run
produced is removed with its files only when no other run uses it: a cached step of a
later run, or a step that read it, keeps it (its producer is then recorded as unknown).
"""

from __future__ import annotations

from typing import Any

from ._store_writes import delete_run as queue_deletion


def delete_run(client: Any, run_id: str) -> None:
    deletion = queue_deletion(client.store, run_id)  # raises StoreError if the store refused it
    artifacts = client.stores.artifacts
    for uri in deletion.files:
        try:
            artifacts.remove(uri)
        except Exception:  # a file already gone is what we wanted
            pass
    client.stores.forget_cached()  # deleted outputs must not be cache hits in this process
