"""Crash safety with real processes: SIGKILL the orchestrator, then resume the run.

Guarantee under test: every step recorded as completed before the kill is never executed
again; a step that was running (or whose completion was not yet recorded) may run again;
the resumed run's final artifacts equal those of an uninterrupted run; the stores hold no
half-written artifact and no step left "running".
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

PIPELINE = textwrap.dedent(
    '''
    import os, sys, time
    from unspool import get_step_context, pipeline, step

    EFFECTS = os.environ["EFFECTS_FILE"]
    HOLD = os.environ.get("HOLD", "")  # where the process waits for RELEASE_FILE (see hold_here)
    RELEASE = os.environ.get("RELEASE_FILE", "")

    def start_order(invocation: str) -> int:
        # Where this invocation's line stands among the squares' lines (appends keep their order).
        with open(EFFECTS) as f:
            squares = [line.strip() for line in f if line.startswith("square")]
        return squares.index(invocation)

    def hold_here(point: str) -> bool:
        if HOLD == "third_square_on":  # every square from the third to start on: two finish first
            return point.startswith("square") and start_order(point) >= 2
        return point == HOLD

    def hold(point: str) -> None:
        # The test kills the process while it waits here, so the kill lands at a known point.
        if hold_here(point):
            while not os.path.exists(RELEASE):
                time.sleep(0.01)

    def effect() -> None:
        invocation = get_step_context().invocation_id
        with open(EFFECTS, "a") as f:
            f.write(invocation + "\\n")
        hold(invocation)

    @step(enable_cache=False)
    def work(x: int) -> int:
        effect()
        return x + 1

    @step(enable_cache=False)
    def spread(x: int) -> list[int]:
        effect()
        return [x + i for i in range(6)]

    @step(enable_cache=False)
    def square(x: int) -> int:
        effect()
        return x * x

    @step(enable_cache=False)
    def total(values: list[int]) -> int:
        effect()
        return sum(values)

    @pipeline(dynamic=True)
    def crashy():
        hold("body")
        x = work(0)
        x = work(x)
        hold("between_work_2_and_work_3")
        x = work(x)
        squares = square.map(spread(x))
        total(squares)

    if __name__ == "__main__":
        crashy()
    '''
)


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "unspool.db", timeout=30)


def _completed(home: Path) -> set[str]:
    if not (home / "unspool.db").exists():
        return set()
    try:
        with _db(home) as conn:
            rows = conn.execute("select invocation_id from step_runs where status = 'completed'").fetchall()
    except sqlite3.OperationalError:
        return set()
    return {r[0] for r in rows}


def _run_exists(home: Path) -> bool:
    try:
        with _db(home) as conn:
            return conn.execute("select count(*) from pipeline_runs").fetchone()[0] > 0
    except sqlite3.OperationalError:
        return False


def _effects(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def _start(tmp_path: Path, home: Path, effects: Path, hold: str = "") -> subprocess.Popen[bytes]:
    script = tmp_path / "crashy_pipeline.py"
    script.write_text(PIPELINE)
    env = {**os.environ, "UNSPOOL_HOME": str(home), "EFFECTS_FILE": str(effects), "UNSPOOL_PROGRESS": "off",
           "HOLD": hold, "RELEASE_FILE": str(tmp_path / "release")}
    return subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def _resume(home: Path, effects: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UNSPOOL_HOME": str(home), "EFFECTS_FILE": str(effects), "UNSPOOL_PROGRESS": "off"}
    code = f"from unspool import Client; r = Client().resume_pipeline_run({run_id!r}); print(r.status.value)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def reference_total(tmp_path_factory) -> str:
    """Content hash of `total` in an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    home, effects = tmp / "home", tmp / "effects"
    proc = _start(tmp, home, effects)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    with _db(home) as conn:
        (digest,) = conn.execute(
            "select av.content_hash from artifact_versions av join step_runs s on s.id = av.producer_step_run_id "
            "where s.invocation_id = 'total'"
        ).fetchone()
    return digest


SCENARIOS = {
    # name: (where the orchestrator waits, what must be true before the test SIGKILLs it there)
    "before_steps": ("body", lambda home, effects: _run_exists(home)),
    "during_a_step": ("work_2", lambda home, effects: _effects(effects)["work_2"] == 1),
    "between_steps": ("between_work_2_and_work_3", lambda home, effects: {"work", "work_2"} <= _completed(home)),
    "during_the_map": (
        "third_square_on",
        lambda home, effects: sum(1 for i in _completed(home) if i.startswith("square")) >= 2,
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sigkill_then_resume_completes_each_step_once(tmp_path: Path, scenario: str, reference_total: str) -> None:
    home, effects = tmp_path / "home", tmp_path / "effects"
    hold, trigger = SCENARIOS[scenario]
    proc = _start(tmp_path, home, effects, hold=hold)
    _wait_for(lambda: trigger(home, effects) or proc.poll() is not None)
    assert proc.poll() is None, f"the pipeline exited while held at {hold!r}: {proc.stderr.read().decode()}"
    completed_at_kill = _completed(home)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    completed_at_kill = _completed(home) | completed_at_kill  # what the store held when the process died
    (tmp_path / "release").touch()  # the resumed run passes every hold point

    result = _resume(home, effects, _run_id(home))
    assert result.returncode == 0, result.stderr  # the run's status is read from the store below

    counts = _effects(effects)
    expected = {"work", "work_2", "work_3", "spread", "total"} | {
        "square" if i == 1 else f"square_{i}" for i in range(1, 7)
    }
    assert set(counts) == expected
    for invocation in completed_at_kill:
        assert counts[invocation] == 1, f"{invocation} completed before the kill but ran again"
    assert all(n <= 2 for n in counts.values())  # at most the step running at the kill re-ran

    with _db(home) as conn:
        statuses = dict(conn.execute("select invocation_id, status from step_runs").fetchall())
        run_rows = conn.execute("select status, count(*) from pipeline_runs group by status").fetchall()
        (digest,) = conn.execute(
            "select av.content_hash from artifact_versions av join step_runs s on s.id = av.producer_step_run_id "
            "where s.invocation_id = 'total'"
        ).fetchone()
    assert run_rows == [("completed", 1)]  # the same run, resumed - not a new one
    assert set(statuses) == expected and set(statuses.values()) == {"completed"}
    assert digest == reference_total
    assert not list(home.rglob(".staging-*"))


def _run_id(home: Path) -> str:
    with _db(home) as conn:
        (run_id,) = conn.execute("select id from pipeline_runs").fetchone()
    return run_id


def test_a_killed_run_is_shown_stopped_not_running_forever(tmp_path: Path) -> None:
    home, effects = tmp_path / "home", tmp_path / "effects"
    proc = _start(tmp_path, home, effects, hold="work_2")
    _wait_for(lambda: "work" in _completed(home) and _effects(effects)["work_2"] == 1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    os.environ["UNSPOOL_HOME"] = str(home)
    from unspool import Client

    client = Client()
    # Reading never writes: the run still reads as running until someone reaps explicitly
    # (`unspool runs list`/`show` and resume do; so does Client.reap_dead_runs).
    assert client.get_pipeline_run(_run_id(home)).status.value == "running"
    assert client.reap_dead_runs() == [_run_id(home)]
    run = client.get_pipeline_run(_run_id(home))
    assert run.status.value == "stopped"
    assert run.error["type"] == "OrchestratorDied" and "unspool runs resume" in run.error["message"]
    assert all(s.status.value != "running" for s in run.steps.values())
