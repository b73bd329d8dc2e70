"""A run has exactly one owner (``_ownership.py``), with real processes on SQLite and PostgreSQL.

* Of two ``unspool runs resume RUN`` at once, even both past every status check, exactly one
  runs; the other prints one line naming the run and its owner, exits non-zero, writes nothing.
* An orchestrator whose run was claimed by someone else (as a claimant on another host would,
  after its heartbeat expired) notices at its next flush, writes nothing more and exits with
  a clear error.
* A pid alive on this host is never declared dead, however old its heartbeat (a SIGSTOPped
  orchestrator); a reused pid (another start time) is; another host's owner is dead only when
  its heartbeat is older than the timeout.
* Resuming a completed run says so (one line, exit 0) and changes nothing.
* Child runs are owned with their root run.

Every wait is on a file or a store row, never on elapsed time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from unspool import Client, ExecutionStatus

PIPELINE = textwrap.dedent(
    '''
    import os, time
    from unspool import pipeline, step

    EFFECTS = os.environ["EFFECTS_FILE"]
    HOLDS = os.environ["HOLD_DIR"]

    def mark(name: str) -> None:
        with open(EFFECTS, "a") as f:
            f.write(f"{name} {os.getpid()}\\n")

    def hold(name: str) -> None:
        # Announce that this process waits here, then wait for the test's release file.
        open(os.path.join(HOLDS, f"at-{name}-{os.getpid()}"), "w").close()
        while not os.path.exists(os.path.join(HOLDS, f"release-{name}")):
            time.sleep(0.01)

    @step(enable_cache=False)
    def first() -> int:
        mark("first")
        hold("first")
        return 1

    @step(enable_cache=False)
    def second(x: int) -> int:
        mark("second")
        return x + 1

    @step(enable_cache=False)
    def flaky(x: int) -> int:
        mark("flaky")
        if not os.path.exists(os.path.join(HOLDS, "fixed")):
            raise RuntimeError("not fixed yet")
        hold("flaky")
        return x

    @pipeline(dynamic=True)
    def two_steps():
        second(first())

    @pipeline(dynamic=True)
    def fails_first():
        flaky(first())

    @pipeline(dynamic=True)
    def parent():
        two_steps()
    '''
)

# `unspool runs resume RUN`, held between the run's status check and its claim until the other
# resume got there too (or exited): both have passed every check before either claims.
GATED_RESUME = textwrap.dedent(
    '''
    import glob, os, sys, time
    from unspool import _cli, _resume
    holds = os.environ["HOLD_DIR"]
    original = _resume.import_pipeline
    def checked(*args, **kwargs):
        open(os.path.join(holds, f"checked.{os.getpid()}"), "w").close()
        while len(glob.glob(os.path.join(holds, "checked.*"))) < 2 and not os.path.exists(os.path.join(holds, "gone")):
            time.sleep(0.005)
        return original(*args, **kwargs)
    _resume.import_pipeline = checked
    sys.argv = ["unspool", "runs", "resume", sys.argv[1]]
    _cli.main()
    '''
)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, home: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{home / 'unspool.db'}"


class World:
    """The pipeline file, the effects and hold files, and the processes of one test."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.dir = tmp_path
        self.url = url
        self.script = tmp_path / "owned.py"
        self.script.write_text(PIPELINE)
        self.effects = tmp_path / "effects"
        self.holds = tmp_path / "holds"
        self.holds.mkdir()
        self.engine = sa.create_engine(url)
        self.env = {**os.environ, "EFFECTS_FILE": str(self.effects), "HOLD_DIR": str(self.holds),
                    "UNSPOOL_PROGRESS": "off"}
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(args, cwd=self.dir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        self.procs.append(proc)
        return proc

    def run(self, name: str) -> subprocess.Popen[str]:
        return self.start(sys.executable, "-m", "unspool", "run", f"{self.script}:{name}")

    def resume(self, run_id: str) -> subprocess.Popen[str]:
        return self.start(sys.executable, "-m", "unspool", "runs", "resume", run_id)

    def held(self, name: str) -> list[int]:
        """Pids of the processes waiting at hold point ``name``."""
        return [int(p.name.rsplit("-", 1)[1]) for p in self.holds.glob(f"at-{name}-*")]

    def release(self, name: str) -> None:
        (self.holds / f"release-{name}").touch()

    def executed(self) -> list[tuple[str, int]]:
        if not self.effects.exists():
            return []
        return [(n, int(p)) for n, p in (line.split() for line in self.effects.read_text().splitlines())]

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Everything the store holds about runs (the tables a run writes), in a stable order."""
        with self.engine.connect() as conn:
            return {
                table: sorted(map(tuple, conn.execute(sa.text(f"select * from {table}")).all()), key=repr)
                for table in ("pipeline_runs", "step_runs", "artifact_versions", "step_run_artifacts")
            }

    def run_row(self) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(
                "select id, name, status, owner, orchestrator, heartbeat from pipeline_runs "
                "where parent_run_id is null")).one()

    def step_statuses(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.text("select invocation_id, status from step_runs")).all())

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.engine.dispose()


@pytest.fixture
def world(tmp_path: Path, store_url: str) -> Any:
    w = World(tmp_path, store_url)
    yield w
    w.close()


def wait_for(condition: Any, *procs: subprocess.Popen[str]) -> None:
    """Wait until ``condition()``; fail at once if one of ``procs`` exited meanwhile (and after
    120 s as a safety bound, so that a broken build fails instead of hanging)."""
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in 120 s"
        for proc in procs:
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"process exited ({proc.returncode}) before the condition: {out}{err}")
        time.sleep(0.01)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


# -- two claimants -----------------------------------------------------------------------------------

def test_of_two_resumes_past_every_check_exactly_one_runs(world: World) -> None:
    world.release("first")
    code, _, err = finish(world.run("fails_first"))
    assert code != 0 and "not fixed yet" in err
    run = world.run_row()
    assert run.status == "failed"
    (world.holds / "fixed").touch()
    before = world.rows()

    resumes = [world.start(sys.executable, "-c", GATED_RESUME, run.id) for _ in range(2)]

    def settled() -> bool:  # one exited and one holds, or both hold (both executing), or both exited
        out = [p for p in resumes if p.poll() is not None]
        if out:
            (world.holds / "gone").touch()  # the other one need not wait at the gate any longer
        holding = len(world.held("flaky"))
        return holding == 2 or len(out) == 2 or (len(out) == 1 and holding == 1)

    wait_for(settled)
    assert len(world.held("flaky")) == 1, "both resumes executed the run"
    (winner,) = world.held("flaky")
    loser = next(p for p in resumes if p.pid != winner)
    assert len(list(world.holds.glob("checked.*"))) == 2  # both had passed the status check
    code, out, err = finish(loser)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1, err
    assert run.name in lines[0] and f"owned by orchestrator {socket.gethostname()}:{winner}" in lines[0]
    assert "Traceback" not in err and "refused" not in out + err

    world.release("flaky")
    code, out, err = finish(next(p for p in resumes if p.pid == winner))
    assert code == 0, out + err
    assert "refused" not in out + err
    after = world.run_row()
    assert after.status == "completed" and after.orchestrator == f"{socket.gethostname()}:{winner}"
    # What ran after the first run: flaky, once, by the winner; the loser executed nothing.
    ran_by_resumes = [(name, pid) for name, pid in world.executed() if pid in {p.pid for p in resumes}]
    assert ran_by_resumes == [("flaky", winner)]
    assert world.step_statuses() == {"first": "completed", "flaky": "completed"}
    assert len(before["step_runs"]) == 2


def test_a_completed_run_is_not_resumed_and_nothing_changes(world: World) -> None:
    world.release("first")
    code, out, err = finish(world.run("two_steps"))
    assert code == 0, out + err
    run = world.run_row()
    before = world.rows()

    code, out, err = finish(world.resume(run.id))
    assert code == 0 and err == "", err
    assert out.strip().splitlines() == [f"run {run.name!r} ({run.id}) already completed; nothing to resume, "
                                        "nothing changed"]
    assert world.rows() == before

    # A claimant that read the run before it completed (past the status check) is refused by
    # the claim itself, and writes nothing.
    from unspool import _ownership
    from unspool._errors import RunClaimedError
    from unspool.testing import current_stores

    with pytest.raises(RunClaimedError, match="already completed"):
        _ownership.claim_run(current_stores().metadata, run.id, _ownership.new_owner(), status="initializing")
    with pytest.raises(RunClaimedError, match="already completed"):
        Client().resume_pipeline_run(run.id)
    assert world.rows() == before


# -- losing the claim --------------------------------------------------------------------------------

def test_an_orchestrator_that_lost_its_claim_stops_and_writes_nothing_more(world: World) -> None:
    proc = world.run("two_steps")
    wait_for(lambda: bool(world.held("first")) and world.step_statuses() == {"first": "running"}, proc)
    run = world.run_row()
    assert run.status == "running" and run.owner.startswith(f"{socket.gethostname()}:{proc.pid}:")
    # A claimant on another host took the run over (its heartbeat had expired, say).
    world.execute("update pipeline_runs set owner = :owner, orchestrator = :orch, heartbeat = :now where id = :id",
                  owner="elsewhere:4242:99:feed", orch="elsewhere:4242", now=time.time(), id=run.id)
    before = world.rows()

    world.release("first")
    code, out, err = finish(proc)
    assert code != 0
    assert f"run {run.name!r} ({run.id}) was taken over by orchestrator elsewhere:4242" in err, out + err
    assert "Traceback" not in err
    assert world.rows() == before  # not a row of the run written after the loss: not first's end, not second
    assert world.step_statuses() == {"first": "running"}  # left to its new owner


# -- who is dead ---------------------------------------------------------------------------------------

def test_a_stopped_orchestrator_on_this_host_is_never_declared_dead(world: World) -> None:
    proc = world.run("two_steps")
    wait_for(lambda: bool(world.held("first")) and world.step_statuses() == {"first": "running"}, proc)
    run = world.run_row()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        # Its heartbeat is an hour old: on this host the pid still decides.
        world.execute("update pipeline_runs set heartbeat = :old where id = :id", old=time.time() - 3600, id=run.id)
        assert Client().reap_dead_runs() == []
        code, out, err = finish(world.resume(run.id))
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1, out + err
        assert f"owned by orchestrator {socket.gethostname()}:{proc.pid}" in lines[0] and run.name in lines[0]
        row = world.run_row()
        assert (row.status, row.owner) == ("running", run.owner)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    world.release("first")
    code, out, err = finish(proc)
    assert code == 0, out + err
    assert world.run_row().status == "completed"
    assert [name for name, _ in world.executed()] == ["first", "second"]


def test_liveness_of_owners_with_real_processes() -> None:
    from unspool._ownership import new_owner, owner_alive, process_start

    host, now = socket.gethostname(), time.time()
    me = new_owner()
    assert owner_alive(me, None, now - 3600, now, 60)  # alive here whatever the heartbeat
    start = process_start(os.getpid())
    assert start is not None
    reused = f"{host}:{os.getpid()}:{int(start) + 1}:0000"  # this pid, another process's start time
    assert not owner_alive(reused, None, now, now, 60)

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    assert not owner_alive(f"{host}:{exited.pid}:1:0000", None, now, now, 60)
    assert not owner_alive(None, f"{host}:{exited.pid}", now, now, 60)  # a row from before owners
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while process_start(zombie.pid) is not None:  # exited, not yet waited for: a zombie
        time.sleep(0.01)
    assert not owner_alive(f"{host}:{zombie.pid}:1:0000", None, now, now, 60)
    zombie.wait()

    assert owner_alive("elsewhere:1:2:abcd", None, now - 30, now, 60)
    assert not owner_alive("elsewhere:1:2:abcd", None, now - 61, now, 60)


def test_a_run_whose_pid_was_reused_is_reaped(world: World) -> None:
    world.release("first")
    code, out, err = finish(world.run("two_steps"))
    assert code == 0, out + err
    run = world.run_row()
    from unspool._ownership import process_start

    start = int(process_start(os.getpid()) or 0)
    live = f"{socket.gethostname()}:{os.getpid()}:{start}:0000"
    world.execute("update pipeline_runs set status = 'running', end_time = null, owner = :o, heartbeat = :h "
                  "where id = :id", o=live, h=time.time() - 3600, id=run.id)
    assert Client().reap_dead_runs() == []  # this very process: alive
    world.execute("update pipeline_runs set owner = :o where id = :id",
                  o=f"{socket.gethostname()}:{os.getpid()}:{start + 1}:0000", id=run.id)
    assert Client().reap_dead_runs() == [run.id]  # the pid now names another process
    assert world.run_row().status == "stopped"


def test_child_runs_are_owned_with_their_root_run(world: World) -> None:
    world.release("first")
    code, out, err = finish(world.run("parent"))
    assert code == 0, out + err
    with world.engine.connect() as conn:
        rows = conn.execute(sa.text("select parent_run_id, owner from pipeline_runs")).all()
    assert len(rows) == 2 and rows[0].owner and rows[0].owner == rows[1].owner
    assert Client().get_pipeline_run(world.run_row().id).status == ExecutionStatus.COMPLETED


def test_a_version_2_store_gains_owners_and_its_runs_are_judged_by_orchestrator(home: Path) -> None:
    import sqlite3

    from unspool._metadata_store import SCHEMA_VERSION, MetadataStore
    from unspool.testing import reset_stores

    Client()  # creates the store at the current version
    reset_stores()
    db = home / "unspool.db"
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    with sqlite3.connect(db) as conn:  # back to version 2, with two live runs from before owners
        conn.execute("ALTER TABLE pipeline_runs DROP COLUMN owner")
        conn.execute("DELETE FROM schema_version WHERE version > 2")
        for run_id, pid in (("dead", exited.pid), ("alive", os.getpid())):
            conn.execute(
                "INSERT INTO pipeline_runs (id, name, pipeline_name, status, dynamic, parameters, config, "
                "run_metadata, orchestrator, heartbeat, created_at) VALUES (?, ?, 'old', 'running', 1, '{}', '{}', "
                "'{}', ?, ?, 1.0)", (run_id, run_id, f"{socket.gethostname()}:{pid}", time.time() - 3600))
    MetadataStore(f"sqlite:///{db}").close()  # opening upgrades it
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        assert "owner" in [r[1] for r in conn.execute("PRAGMA table_info(pipeline_runs)")]
    assert Client().reap_dead_runs() == ["dead"]  # this process, alive here: not reaped
    assert Client().get_pipeline_run("alive").status == ExecutionStatus.RUNNING
