"""Who owns a run: claiming it, the owner's token, and whether a recorded owner lives.

A run has exactly one owner, the orchestrating process that claimed it (first run or
resume; child runs are owned with their root run). The token is
``host:pid:start:random``: ``start`` is the process's start time (field 22 of
``/proc/PID/stat``), so a pid the kernel reused for another process is not mistaken for
the owner, and the random part tells two claims by one process apart.

Liveness is decided without trusting clocks where the host can be asked: an owner on this
host is alive exactly while its pid runs with the recorded start time (a stopped or
swapped-out process whose heartbeat went stale is alive; a zombie is not). An owner on
another host is dead only when its heartbeat is older than the timeout. Rows written
before owners existed carry only ``orchestrator`` (``host:pid``) and are judged the same
way, without the start-time check.

Claiming (:func:`claim_run`) and reaping (:func:`reap_runs`) are compare-and-swap updates in
write transactions of their own, outside the buffered writer: each must be decided and done
in one step, and its caller must know the outcome before it goes on. The flush checks, in its
own transaction, that the claims of the runs this process drives still hold
(``MetadataStore.own``).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Any

import sqlalchemy as sa

from ._errors import RunClaimedError
from ._metadata_store import (
    _LIVE,
    HEARTBEAT_TIMEOUT,
    MetadataStore,
    next_change_in,
    pipeline_runs,
    step_runs,
)


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot, or None when it is not running
    (or is a zombie) or the system has no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name (field 2) may hold spaces and ')'
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else None


def new_owner() -> str:
    """A fresh token naming this process: ``host:pid:start:random``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start(pid) or ''}:{secrets.token_hex(4)}"


def orchestrator_of(owner: str) -> str:
    """``host:pid``: the token as the ``orchestrator`` column and messages show it."""
    host, pid, _ = _parts(owner)
    return f"{host}:{pid}"


def _parts(owner: str) -> tuple[str, str, str]:
    parts = owner.split(":")
    if len(parts) >= 4:  # host:pid:start:random (a host name has no ':')
        return ":".join(parts[:-3]), parts[-3], parts[-2]
    host, _, pid = owner.rpartition(":")  # host:pid, from before owners were recorded
    return host, pid, ""


def owner_alive(owner: str | None, orchestrator: str | None, heartbeat: float | None, now: float,
                timeout: float) -> bool:
    """Whether the process that owns a live run still runs (see the module docstring)."""
    host, pid, start = _parts(owner or orchestrator or "")
    if host == socket.gethostname() and pid.isdigit():
        if not _pid_exists(int(pid)):
            return False
        running_since = process_start(int(pid))
        if running_since is None:  # no /proc: the pid exists, so it lives
            return not os.path.isdir("/proc")
        return not start or running_since == start
    return heartbeat is None or now - heartbeat <= timeout


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_run(store: MetadataStore, run_id: str, owner: str, **changes: Any) -> None:
    """Take ``run_id`` for ``owner`` and apply ``changes``, in a write transaction of its own.

    Only a run that is neither completed nor driven by a live owner is taken (the row is
    locked, and the update is conditional on what was read). Anyone else gets
    :class:`RunClaimedError`, one line naming the run and its owner, and nothing is written.
    """
    runs = pipeline_runs.c
    now = time.time()
    with store.write() as conn:
        row = conn.execute(sa.select(runs.name, runs.status, runs.owner, runs.orchestrator, runs.heartbeat)
                           .where(runs.id == run_id).with_for_update()).first()
        if row is None:
            raise RunClaimedError(f"no pipeline run {run_id!r} to claim")
        if row.status == "completed":
            raise RunClaimedError(f"run {row.name!r} ({run_id}) already completed; nothing to resume, nothing changed")
        if row.status in _LIVE and owner_alive(row.owner, row.orchestrator, row.heartbeat, now, HEARTBEAT_TIMEOUT):
            beat = f"; last heartbeat {now - row.heartbeat:.0f} s ago" if row.heartbeat else ""
            raise RunClaimedError(
                f"run {row.name!r} ({run_id}) is owned by orchestrator {row.orchestrator}, which is alive{beat}; "
                "nothing changed (wait for it, or stop that process first)"
            )
        taken = conn.execute(
            pipeline_runs.update()
            .where(runs.id == run_id, runs.status == row.status, runs.owner.is_not_distinct_from(row.owner))
            .values(owner=owner, changed=next_change_in(conn), **changes)
        ).rowcount
        if taken != 1:  # pragma: no cover - the row lock above makes this unreachable
            raise RunClaimedError(f"run {row.name!r} ({run_id}) was claimed by another process meanwhile")


def reap_runs(store: MetadataStore, seen: list[tuple[str, str | None, str | None]],
              errors: dict[str, dict[str, Any]]) -> list[str]:
    """Mark runs ``(id, owner, orchestrator)`` stopped, with their unfinished steps, if they are
    still live under the owner they were judged dead with (a run claimed meanwhile is left
    alone); returns the ids marked."""
    now, reaped, runs = time.time(), [], pipeline_runs.c
    if not seen:
        return reaped
    with store.write() as conn:
        # Run rows, then the change counter: the order a flush takes them (its ownership check,
        # then its stamp), so that a reap and a flush cannot wait for each other on PostgreSQL.
        conn.execute(sa.select(runs.id).where(runs.id.in_([s[0] for s in seen])).order_by(runs.id).with_for_update()).all()
        change = next_change_in(conn)  # stamps what it marks (the change cursor)
        for run_id, owner, orchestrator in seen:
            if conn.execute(
                pipeline_runs.update()
                .where(runs.id == run_id, runs.status.in_(_LIVE), runs.owner.is_not_distinct_from(owner),
                       runs.orchestrator.is_not_distinct_from(orchestrator))
                .values(status="stopped", end_time=now, error=errors[run_id], changed=change)
            ).rowcount:
                conn.execute(
                    step_runs.update().where(step_runs.c.run_id == run_id, step_runs.c.status.in_(_LIVE))
                    .values(status="stopped", end_time=now, error={**errors[run_id], "type": "stopped"}, changed=change)
                )
                reaped.append(run_id)
    return reaped
