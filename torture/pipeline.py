"""The pipeline the torture suite kills, with hold points (see torture/run.py).

Every step appends ``start <invocation> <pid>`` to ``EFFECTS_FILE`` when its body begins and
``done <invocation> <pid>`` just before it returns, so the harness knows, from effects and
not from timing, what ran, what finished and which process ran it.

``HOLD`` names a point where the process writes ``HOLD_DIR/<point>.<pid>`` and then waits for
``RELEASE_FILE`` to exist; the harness SIGKILLs it while it waits, so the kill lands exactly
there. Points:

* ``body``: the pipeline body has started (nothing executed yet);
* ``start:<invocation>``: inside that step, after its start line;
* ``after:work_2``: in the body, right after ``work_2`` returned (its result is in the body's hands);
* ``map``: every square from the third to start waits (two finish first);
* ``flush:<n>``: inside the metadata store's write transaction (statements executed, not
  committed), the first one that begins after ``n`` steps wrote their done line (the
  background writer's, or the final flush when the run ends first).

``MARK_BODY=1`` writes ``HOLD_DIR/body-started.<pid>`` without waiting (the random sweep
times its kills from it). ``STEP_SLEEP`` (seconds) makes each step last a little.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

from unspool import get_step_context, pipeline, step

EFFECTS = os.environ.get("EFFECTS_FILE", os.devnull)
HOLD = os.environ.get("HOLD", "")
HOLD_DIR = os.environ.get("HOLD_DIR", "")
RELEASE = os.environ.get("RELEASE_FILE", "")
STEP_SLEEP = float(os.environ.get("STEP_SLEEP", "0.05"))
WIDTH = int(os.environ.get("MAP_WIDTH", "8"))


def _effect(kind: str, invocation: str) -> None:
    fd = os.open(EFFECTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {invocation} {os.getpid()}\n".encode())  # one write: lines never interleave
    finally:
        os.close(fd)


def _lines(kind: str) -> list[str]:
    try:
        with open(EFFECTS) as f:
            return [line.split()[1] for line in f if line.startswith(kind + " ")]
    except FileNotFoundError:
        return []


def _mark(point: str) -> None:
    if HOLD_DIR:
        with open(os.path.join(HOLD_DIR, f"{point}.{os.getpid()}"), "w"):
            pass


def _should_hold(point: str) -> bool:
    if HOLD == "map":
        if not point.startswith("start:square"):
            return False
        squares = [s for s in _lines("start") if s.startswith("square")]
        return point[len("start:"):] in squares[2:]
    return point == HOLD


def hold(point: str) -> None:
    if not _should_hold(point):
        return
    _mark(point.replace(":", "-"))
    while not os.path.exists(RELEASE):
        time.sleep(0.01)


def _install_flush_hold() -> None:
    """Hold inside the first background flush transaction after ``n`` steps finished."""
    from unspool import _metadata_store

    after = int(HOLD.split(":", 1)[1])
    original = _metadata_store.MetadataStore.write
    held = threading.Event()

    class Holding:
        def __init__(self, inner):
            self.inner = inner

        def __enter__(self):
            return self.inner.__enter__()

        def __exit__(self, *exc):
            if exc[0] is None and not held.is_set():
                held.set()
                hold(HOLD)  # statements executed, transaction still open
            return self.inner.__exit__(*exc)

    def write(self):
        inner = original(self)
        if held.is_set() or len(_lines("done")) < after:
            return inner
        return Holding(inner)

    _metadata_store.MetadataStore.write = write

    # A flush to a SQLite file runs through the writer's own sqlite3 connection: hold there
    # too, after the batch's statements and before its COMMIT.
    from unspool import _batch_sql

    original_transaction = _batch_sql.SQLiteWriter.transaction

    @contextlib.contextmanager
    def transaction(self):
        with original_transaction(self) as statements:
            yield statements
            if not held.is_set() and len(_lines("done")) >= after:
                held.set()
                hold(HOLD)  # statements executed, transaction still open

    _batch_sql.SQLiteWriter.transaction = transaction


if HOLD.startswith("flush:"):
    _install_flush_hold()


def effect(result):
    invocation = get_step_context().invocation_id
    _effect("start", invocation)
    hold("start:" + invocation)
    if STEP_SLEEP:
        time.sleep(STEP_SLEEP)
    _effect("done", invocation)
    return result


@step(enable_cache=False)
def work(x: int) -> int:
    return effect(x + 1)


@step(enable_cache=False)
def spread(x: int) -> list[int]:
    return effect([x + i for i in range(WIDTH)])


@step(enable_cache=False)
def square(x: int) -> int:
    return effect(x * x)


@step(enable_cache=False)
def total(values: list[int]) -> int:
    return effect(sum(values))


@pipeline(dynamic=True)
def torture():
    if os.environ.get("MARK_BODY"):
        _mark("body-started")
    hold("body")
    x = work(0)
    x = work(x)
    hold("after:work_2")
    x = work(x)
    squares = square.map(spread(x))
    t = total(squares)
    work(t)
    work(t)


def invocations() -> list[str]:
    """Every invocation a complete run executes, in body order."""
    squares = ["square"] + [f"square_{i}" for i in range(2, WIDTH + 1)]
    return ["work", "work_2", "work_3", "spread", *squares, "total", "work_4", "work_5"]


def consumers() -> dict[str, list[str]]:
    """Who receives each invocation's result: a consumer that started had seen it."""
    squares = ["square"] + [f"square_{i}" for i in range(2, WIDTH + 1)]
    seen = {"work": ["work_2"], "work_2": ["work_3"], "work_3": ["spread"], "spread": squares,
            "total": ["work_4", "work_5"]}
    for s in squares:
        seen[s] = ["total"]
    return seen


if __name__ == "__main__":
    torture()
    sys.exit(0)
