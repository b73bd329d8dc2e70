"""Crash safety: finding runs whose orchestrator died, and resuming runs.

A run records where its pipeline comes from (module or file, attribute) and the values
of its built-in substitutions, so that ``resume`` can run the same body again *as the same
run*: every invocation that completed before on the same inputs is reused without
executing (``Run._reuse_previous``), everything else executes. Invocation ids come from
call order, so a body that calls its steps in a different order on resume re-executes
the shifted ones (the reference documents the same caveat).

Each orchestrating process refreshes the heartbeat of the runs it drives. A run still
marked ``running`` whose process is gone (same host, pid not alive) or whose heartbeat is
older than ``HEARTBEAT_TIMEOUT`` is marked ``stopped``, with its running steps, when a
client next looks; it can then be resumed.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import sqlalchemy as sa

from ._errors import NotFoundError, PipelineError
from ._metadata_store import HEARTBEAT_TIMEOUT, pipeline_runs, step_runs


def pipeline_source(pipeline: Any) -> dict[str, Any]:
    """Where a pipeline can be loaded from again; ``attribute`` is None when it cannot."""
    from ._loading import locate

    try:
        source, attribute, source_file = locate(pipeline)
    except PipelineError as exc:
        return {"source": None, "attribute": None, "source_file": None, "why": str(exc)}
    return {"source": source, "attribute": attribute, "source_file": source_file}


def import_pipeline(recorded: dict[str, Any]) -> Any:
    from ._loading import load_pipeline

    if not recorded.get("attribute"):
        raise PipelineError(f"cannot resume: {recorded.get('why') or 'the run did not record where its pipeline is defined'}")
    return load_pipeline(recorded["source"], recorded["attribute"], recorded.get("source_file"))


def _orchestrator_alive(orchestrator: str | None, heartbeat: float | None, now: float) -> bool:
    if heartbeat is not None and now - heartbeat > HEARTBEAT_TIMEOUT:
        return False
    host, _, pid = (orchestrator or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def reap_dead_runs(store: Any) -> list[str]:
    """Mark runs whose orchestrator died as stopped (with their running steps)."""
    now = time.time()
    with store.read() as conn:
        candidates = conn.execute(
            sa.select(pipeline_runs.c.id, pipeline_runs.c.orchestrator, pipeline_runs.c.heartbeat)
            .where(pipeline_runs.c.status.in_(["running", "initializing"]))
        ).all()
    dead = [r for r in candidates if not _orchestrator_alive(r.orchestrator, r.heartbeat, now)]
    if not dead:
        return []
    with store.write() as conn:
        for r in dead:
            seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.heartbeat or now))
            error = {
                "type": "OrchestratorDied",
                "message": (
                    f"the orchestrating process ({r.orchestrator}) died; last heartbeat {seen}. "
                    f"Resume it with: unspool runs resume {r.id}"
                ),
            }
            conn.execute(
                pipeline_runs.update()
                .where(pipeline_runs.c.id == r.id, pipeline_runs.c.status.in_(["running", "initializing"]))
                .values(status="stopped", end_time=now, error=error)
            )
            conn.execute(
                step_runs.update()
                .where(step_runs.c.run_id == r.id, step_runs.c.status.in_(["running", "initializing"]))
                .values(status="stopped", end_time=now, error={"type": "stopped", "message": error["message"]})
            )
    return [r.id for r in dead]


def resume_run(run_id_or_name: str) -> str:
    """Run a stopped or failed run's body again as the same run; returns the run id."""
    from ._engine import Run, get_environment, load_previous
    from ._progress import console_progress
    from ._runner import artifact_store_for

    env = get_environment()
    env.metadata.flush()
    reap_dead_runs(env.metadata)
    with env.metadata.read() as conn:
        row = conn.execute(
            sa.select(pipeline_runs).where(
                sa.or_(pipeline_runs.c.id == run_id_or_name, pipeline_runs.c.name == run_id_or_name)
            )
        ).mappings().first()
    if row is None:
        raise NotFoundError(f"no pipeline run with id or name {run_id_or_name!r}; `unspool runs list` shows them")
    if row["parent_run_id"]:
        raise PipelineError(f"run {row['name']!r} is a child run; resume its root run {row['parent_run_id']}")
    if row["status"] in ("running", "initializing"):
        raise PipelineError(
            f"run {row['name']!r} is still running (orchestrator {row['orchestrator']}); wait for it or kill it first"
        )
    config = row["config"] or {}
    pipeline = import_pipeline(config.get("source") or {})
    overrides: dict[str, Any] = {}
    for key in ("enable_cache", "execution_mode", "settings", "substitutions", "budget", "retry", "orchestrator"):
        if config.get(key) is not None:
            overrides[key] = config[key]
    if config.get("config_path"):
        overrides["config_path"] = config["config_path"]
    try:
        pipeline = pipeline.with_options(**overrides)
    except Exception:  # a config that no longer applies: resume with the pipeline as defined
        pass
    _remove_staging(artifact_store_for(env.artifact_root), env.artifact_root, row["id"])
    previous = load_previous(env, row["id"])
    from ._parameters import convert

    # the recorded parameters are JSON: give the body the types its signature names again
    params = convert(f"pipeline {pipeline.name!r}", pipeline.func, pipeline.signature, dict(row["parameters"]))
    run = Run(pipeline, params, env, previous=previous)
    with console_progress(run):
        run.execute()
    return run.id


def _remove_staging(store: Any, root: str, run_id: str) -> None:
    """Delete half-written artifacts (``.staging-*``) a crash left under the run's folder."""
    base = store.join(run_id)
    if not store.exists(base):
        return
    if store.is_local:
        import shutil

        for dirpath, dirnames, _ in os.walk(base):
            for name in list(dirnames):
                if name.startswith(".staging-"):
                    shutil.rmtree(os.path.join(dirpath, name), ignore_errors=True)
                    dirnames.remove(name)
    else:
        for path in store.fs.glob(f"{base}/**/.staging-*"):
            store.remove(path)
