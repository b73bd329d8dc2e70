"""Concurrency: submitted steps really run at once, and several processes can share one store.

Concurrency is proven with barriers and events (which time out, failing the test, instead of
hanging when steps are serialised), never with timing thresholds.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from unspool import Client, ExecutionStatus, pipeline, step


def test_every_successor_a_finished_step_makes_ready_starts_at_once() -> None:
    """Branches that share an upstream step run together, not one after the other: the
    thread that finishes the upstream step hands all but one of them out before running
    the last itself."""
    barrier = threading.Barrier(3, timeout=15)

    @step(enable_cache=False)
    def source() -> int:
        time.sleep(0.05)  # waits rather than computes: the run keeps all its slots (see _scheduler)
        return 1

    @step(enable_cache=False)
    def branch(x: int, i: int) -> int:
        barrier.wait()  # passes only while all three branches run at the same time
        return x + i

    @pipeline
    def fork() -> None:
        x = source()
        for i in range(3):
            branch(x, i)

    run = fork()

    assert run.status == ExecutionStatus.COMPLETED, run.error


def test_submitted_steps_run_concurrently() -> None:
    n = 8
    barrier = threading.Barrier(n, timeout=60)
    threads: set[str] = set()

    @step(enable_cache=False)
    def meet(i: int) -> int:
        threads.add(threading.current_thread().name)
        barrier.wait()  # only passes once all n steps are running at the same time
        return i

    @pipeline(dynamic=True)
    def together() -> None:
        futures = [meet.submit(i) for i in range(n)]
        assert [f.load() for f in futures] == list(range(n))

    run = together()

    assert run.status == ExecutionStatus.COMPLETED, run.error
    assert len(threads) == n
    steps = list(run.steps.values())
    assert max(s.start_time for s in steps) <= min(s.end_time for s in steps)


def test_submit_returns_at_once_and_the_body_keeps_going() -> None:
    released = threading.Event()

    @step(enable_cache=False)
    def waits_for_later_step() -> str:
        # Can only finish after the body ran `release` below, i.e. after submit() returned.
        if not released.wait(timeout=60):
            raise TimeoutError("the body was blocked by submit()")
        return "done"

    @step(enable_cache=False)
    def release() -> None:
        released.set()

    order: list[str] = []

    @pipeline(dynamic=True)
    def overlapping() -> None:
        future = waits_for_later_step.submit()
        order.append(f"submitted, done={future.done()}")
        release()
        order.append(future.load())

    run = overlapping()

    assert order == ["submitted, done=False", "done"]
    assert run.status == ExecutionStatus.COMPLETED


def test_a_future_passed_downstream_is_waited_for() -> None:
    gate = threading.Event()

    @step(enable_cache=False)
    def slow() -> int:
        assert gate.wait(timeout=60)
        return 5

    @step(enable_cache=False)
    def after(x: int) -> int:
        return x + 1

    @pipeline(dynamic=True)
    def chained() -> None:
        future = slow.submit()
        downstream = after.submit(future)  # scheduled, waits for `slow`
        assert not downstream.done()
        gate.set()
        assert downstream.load() == 6

    run = chained()
    assert run.steps["after"].start_time >= run.steps["slow"].end_time
    assert run.steps["after"].upstream == ["slow"]


SCRIPT = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    from typing import Annotated

    from unspool import pipeline, step

    me, other, sync_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])

    @step(enable_cache=False)
    def rendezvous() -> None:
        # Both processes are inside a run before either goes on.
        (sync_dir / me).touch()
        while not (sync_dir / other).exists():  # no deadline: the test bounds the whole exchange
            time.sleep(0.01)

    @step(enable_cache=False)
    def produce(i: int) -> Annotated[int, "shared_name"]:
        return i

    @pipeline(dynamic=True)
    def shared(tag: str) -> None:
        rendezvous()
        for f in [produce.submit(i) for i in range(10)]:
            f.result()

    if __name__ == "__main__":
        run = shared(me)
        print(run.status.value)
    """
)


def test_two_processes_run_pipelines_on_one_store_at_once(tmp_path: Path, home: Path) -> None:
    script = tmp_path / "shared.py"
    script.write_text(SCRIPT)
    sync_dir = tmp_path / "sync"
    sync_dir.mkdir()
    env = {**os.environ, "UNSPOOL_HOME": str(home), "UNSPOOL_PROGRESS": "off"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), me, other, str(sync_dir)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for me, other in (("a", "b"), ("b", "a"))
    ]
    try:
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()

    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, (out, err)  # the statuses are read from the store below
    runs = Client().list_pipeline_runs(pipeline_name="shared")
    assert sorted(r.parameters["tag"] for r in runs) == ["a", "b"]
    assert all(r.status == ExecutionStatus.COMPLETED and len(r.steps) == 11 for r in runs)
    # The two runs overlapped in time, and version numbers stayed unique across processes.
    first, second = sorted(runs, key=lambda r: r.start_time)
    assert second.start_time < first.end_time
    with sqlite3.connect(home / "unspool.db") as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM artifact_versions WHERE name = 'shared_name'")]
    assert sorted(versions) == list(range(1, 21))


def test_static_branches_that_share_an_upstream_run_at_the_same_time() -> None:
    """left and right only finish if they run concurrently: each waits for the other at a barrier."""
    meet = threading.Barrier(2, timeout=60)

    @step(enable_cache=False)
    def source() -> int:
        return 1

    @step(enable_cache=False)
    def left(x: int) -> int:
        meet.wait()
        return x

    @step(enable_cache=False)
    def right(x: int) -> int:
        meet.wait()
        return x

    @pipeline
    def branches() -> None:
        s = source()
        left(s)
        right(s)

    run = branches()
    assert {k: v.status.value for k, v in run.steps.items()} == {
        "source": "completed", "left": "completed", "right": "completed"}
