"""Every read of the metadata store: the one place that knows how to ask for runs, step
runs, artifact versions and snapshots.

The client, resume, snapshots, the CLI and the engine (cache index, run-name check,
reading an earlier execution back) all read through these functions; none of them writes
SQL. Each function opens one connection and returns plain rows (mappings keyed by column
name) or tuples; turning rows into the client's models is the caller's business. Writes
all go through the buffered writer in ``_metadata_store.py``; the few reads a write needs
inside the writer's transaction (a run's tree before deleting it, metadata before merging
into it) take that transaction's connection instead of a store.

The reads live in one module per table (``_queries_runs``, ``_queries_steps``,
``_queries_artifacts``, ``_queries_snapshots``, with what they share in
``_queries_common``); this module gathers them under one name, so callers write
``_queries.find_run(store, ...)`` without knowing which table answers.

Runs and snapshots are looked up the same way, by :func:`find_run` / :func:`find_snapshot`:
an exact id or name first, then a unique id prefix of at least six characters.
"""

from __future__ import annotations

from ._queries_artifacts import (
    artifact_names,
    consumers_of,
    get_artifact_version,
    list_artifact_versions,
    version_uris,
    versions_used_elsewhere,
)
from ._queries_common import CHUNK, Row, find, order_by, paged, stored_metadata
from ._queries_runs import (
    find_run,
    get_pipeline,
    list_pipelines,
    list_runs,
    live_runs,
    run_name_taken,
    run_record,
    run_tree,
)
from ._queries_snapshots import find_snapshot, list_snapshots
from ._queries_steps import (
    completed_outputs,
    get_step_run,
    step_run_io,
    step_run_origins,
    step_runs_of,
    step_status_counts,
    unfinished_step_runs,
)

__all__ = [
    "CHUNK", "Row", "artifact_names", "completed_outputs", "consumers_of", "find", "find_run",
    "find_snapshot", "get_artifact_version", "get_pipeline", "get_step_run", "list_artifact_versions",
    "list_pipelines", "list_runs", "list_snapshots", "live_runs", "order_by", "paged", "run_name_taken",
    "run_record", "run_tree", "step_run_io", "step_run_origins", "step_runs_of", "step_status_counts",
    "stored_metadata", "unfinished_step_runs", "version_uris", "versions_used_elsewhere",
]
