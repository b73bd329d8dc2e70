"""Crash safety: finding runs whose orchestrator died, and resuming runs.

A run records where its pipeline comes from (module or file, attribute), its
configuration (``_config.recorded_options``: everything ``with_options`` or a config file
set) and the values of its built-in substitutions, so that ``resume`` can run the same body
again *as the same run*, with exactly that configuration (``_config_file.reapply_recorded``;
a configuration that cannot be re-applied is an error): every invocation that completed before on the same inputs is reused without
executing (``Run._reuse_previous``), everything else executes. Invocation ids come from
call order, so a body that calls its steps in a different order on resume re-executes
the shifted ones (the reference documents the same caveat).

A run has one owner (``_ownership.py``): the process that claimed it, first run or resume.
Each orchestrating process refreshes the heartbeat of the runs it drives. A run still
marked ``running`` whose owner is dead (on this host: its pid is gone or is another
process; on another host: its heartbeat is older than ``HEARTBEAT_TIMEOUT``) is marked
``stopped``, with its running steps, by :func:`reap_dead_runs` (``unspool runs list``,
resume, ``Client.reap_dead_runs``); it can then be resumed. Resuming claims the run before
it writes or removes anything, so of two resumes at once exactly one runs; resuming a
completed run says so and changes nothing.
"""

from __future__ import annotations

import os
import shutil
import time

from . import _queries
from ._artifact_store import ArtifactStore
from ._cache import load_previous
from ._config_file import reapply_recorded
from ._engine import Run, claim
from ._errors import NotFoundError, PipelineError, RunClaimedError
from ._loading import import_pipeline
from ._metadata_store import HEARTBEAT_TIMEOUT, MetadataStore
from ._ownership import owner_alive, reap_runs
from ._parameters import convert
from ._progress import console_progress
from ._stores import Stores


def reap_dead_runs(store: MetadataStore) -> list[str]:
    """Mark runs whose orchestrator died as stopped (with their unfinished steps).

    An explicit call (the CLI's ``runs list``/``runs resume`` and ``Client.reap_dead_runs``
    make it); reading never reaps. Finding candidates only reads; marking them is a
    compare-and-swap on the owner they were judged dead with (``_ownership.reap_runs``), so
    a run another process claimed in between is left alone.
    """
    now = time.time()
    dead = [r for r in _queries.live_runs(store)
            if not owner_alive(r.owner, r.orchestrator, r.heartbeat, now, HEARTBEAT_TIMEOUT)]
    if not dead:
        return []
    errors = {}
    for r in dead:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.heartbeat or now))
        errors[r.id] = {"type": "OrchestratorDied", "message": (
            f"the orchestrating process ({r.orchestrator}) died; last heartbeat {seen}. "
            f"Resume it with: unspool runs resume {r.id}"
        )}
    return reap_runs(store, [(r.id, r.owner, r.orchestrator) for r in dead], errors)


def resume_run(run_id_or_name: str, stores: Stores) -> str:
    """Run a stopped or failed run's body again as the same run; returns the run id."""
    stores.metadata.flush()
    reap_dead_runs(stores.metadata)
    row = _queries.find_run(stores.metadata, run_id_or_name)
    if row is None:
        raise NotFoundError(f"no pipeline run with id or name {run_id_or_name!r}; `unspool runs list` shows them")
    if row["parent_run_id"]:
        raise PipelineError(f"run {row['name']!r} is a child run; resume its root run {row['parent_run_id']}")
    if row["status"] == "completed":
        raise RunClaimedError(f"run {row['name']!r} ({row['id']}) already completed; nothing to resume, nothing changed")
    if row["status"] in ("running", "initializing"):
        raise RunClaimedError(
            f"run {row['name']!r} ({row['id']}) is owned by orchestrator {row['orchestrator']}, which is alive; "
            "nothing changed (wait for it, or stop that process first)"
        )
    config = row["config"] or {}
    pipeline = reapply_recorded(import_pipeline(config.get("source") or {}), config, what=f"run {row['name']!r}")
    previous = load_previous(stores, row["id"])
    # the recorded parameters are JSON: give the body the types its signature names again
    params = convert(f"pipeline {pipeline.name!r}", pipeline.func, pipeline.signature, dict(row["parameters"]))
    run = Run(pipeline, params, stores, previous=previous)
    # The checks above only read: two resumes can both pass them. The claim decides, before
    # anything is written or removed; the loser gets RunClaimedError and changes nothing.
    claim(run)
    _remove_staging(stores.artifacts, row["id"])
    with console_progress(run):
        run.execute()
    return run.id


def _remove_staging(store: ArtifactStore, run_id: str) -> None:
    """Delete half-written artifacts (``.staging-*``) a crash left under the run's folder."""
    base = store.join(run_id)
    if not store.exists(base):
        return
    if store.is_local:
        for dirpath, dirnames, _ in os.walk(base):
            for name in list(dirnames):
                if name.startswith(".staging-"):
                    shutil.rmtree(os.path.join(dirpath, name), ignore_errors=True)
                    dirnames.remove(name)
    else:
        for path in store.fs.glob(f"{base}/**/.staging-*"):
            store.remove(path)
