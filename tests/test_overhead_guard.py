"""Regression guard for per-step overhead (issue 5; timings live in bench/, not here).

Counts, never times: SQL statements per step, files, folders and directory listings per
step in the artifact store, and threads started per run. The store's background flusher is
slowed to one flush an hour for the duration of a test, so every buffered write lands in the
run's own explicit flushes and the counts do not depend on how fast the machine is (a chain
commits each completion before its body sees the result: one transaction per step, bounded
below). A step that costs its own statement, transaction or thread shows up as a count
proportional to the number of steps.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from unspool import _metadata_store as store_module
from unspool import pipeline, step
from unspool._engine import DEFAULT_PARALLELISM
from unspool.testing import current_stores

N = 200

MAX_WRITES_PER_STEP = 0.2  # INSERT/UPDATE/DELETE statements (an executemany counts once)
MAX_READS_PER_STEP = 1.5  # SELECTs: the cache lookup is one per step
MAX_WRITE_TRANSACTIONS_PER_STEP = 0.05  # BEGIN IMMEDIATE: one per flush, not per step
# A chain's body sees every result as it comes: each completion is committed before that
# (a result anything has seen is never executed again), so one transaction and its few
# statements per step, and no more.
MAX_CHAIN_TRANSACTIONS_PER_STEP = 1.0
RUN_TRANSACTIONS = 4
# A flush that writes run or step rows also bumps the change counter once (the dashboard's exact
# change cursor, schema 5): one UPDATE per flush, not per row. Measured at N = 200: a chain
# 1,010 writes in 203 flushes (807 before the counter: exactly one more per flush), a fan-out
# 32 in 7 (25 before); both bounds held that without being raised.
MAX_CHAIN_WRITES_PER_STEP = 6.0
MAX_FILES_PER_STEP = 3
MAX_DIRS_PER_STEP = 1.1  # the version folder of each output, no folder per invocation (issue 16)
MAX_LISTINGS_PER_STEP = 0.1  # directory scans: a version the run wrote is not listed again to load it


@step
def produce(n: int) -> list[int]:
    return list(range(n))


@step
def worker(x: int) -> int:
    return x + 1


@step
def reduce_sum(values: list[int]) -> int:
    return sum(values)


@pipeline(dynamic=True)
def fan_out(n: int) -> None:
    reduce_sum(worker.map(produce(n)))


@pipeline(dynamic=True)
def chain(k: int) -> None:
    x = worker(0)
    for _ in range(k - 1):
        x = worker(x)


class Counter:
    """Statements of the metadata store by kind: reads as its engine saw them, writes and write
    transactions as its writer counted them (a flush on a SQLite file runs through its own
    sqlite3 connection, which the engine never sees)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.engine = store.engine
        self._reads = {"read": 0, "read_tx": 0, "other": 0, "listings": 0}
        self._base = (store.statements, store.transactions)
        sa.event.listen(self.engine, "before_cursor_execute", self._seen)

    @property
    def counts(self) -> dict[str, int]:
        return {"write": self.store.statements - self._base[0], "write_tx": self.store.transactions - self._base[1],
                **self._reads}

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if verb in ("SELECT", "WITH"):
            self._reads["read"] += 1
        elif verb == "BEGIN":
            self._reads["read_tx"] += 1
        else:
            self._reads["other"] += 1

    def remove(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(store_module, "FLUSH_INTERVAL", 3600.0)
    env = current_stores()  # opened (and migrated) before counting starts
    counter = Counter(env.metadata)
    started: list[str] = []
    original_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        original_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    original_scandir = os.scandir

    def counting_scandir(*args: Any) -> Any:
        counter._reads["listings"] += 1
        return original_scandir(*args)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    yield env, counter, started
    counter.remove()


def _files(root: Path) -> tuple[int, list[str], int]:
    count = dirs = 0
    staging = []
    for _dirpath, dirnames, filenames in os.walk(root):
        count += len(filenames)
        dirs += len(dirnames)
        staging += [d for d in dirnames if d.startswith(".staging")]
    return count, staging, dirs


def _check(env: Any, counter: Counter, started: list[str], steps: int, max_writes: float = MAX_WRITES_PER_STEP,
           max_transactions: float = MAX_WRITE_TRANSACTIONS_PER_STEP) -> None:
    counts = counter.counts
    files, staging, dirs = _files(Path(env.artifact_root))
    assert dirs / steps <= MAX_DIRS_PER_STEP, f"artifact folders per step regressed: {dirs} for {steps} steps"
    assert counts["listings"] / steps <= MAX_LISTINGS_PER_STEP, f"directory listings per step regressed: {counts}"
    report = f"{steps} steps: {counts}, {files} artifact files, threads started: {started}"
    assert counts["write"] / steps <= max_writes, f"SQL writes per step regressed; {report}"
    assert counts["read"] / steps <= MAX_READS_PER_STEP, f"SQL reads per step regressed; {report}"
    # the run's own flushes (its start and its end) come on top
    assert (counts["write_tx"] - RUN_TRANSACTIONS) / steps <= max_transactions, f"write transactions per step regressed; {report}"
    assert files / steps <= MAX_FILES_PER_STEP, f"artifact files per step regressed; {report}"
    assert not staging, f"staging directories left behind: {staging[:5]}"
    # one pool of step threads per run plus the store writer and a few helpers, not a thread per step
    assert len(started) <= DEFAULT_PARALLELISM + 8, f"threads started per step; {report}"


def test_fan_out_overhead_per_step_is_bounded(measured: Any) -> None:
    env, counter, started = measured
    before = threading.active_count()
    run = fan_out(N)
    steps = N + 2
    assert run.metadata["step_counts"] == {"completed": steps}
    _check(env, counter, started, steps)
    assert threading.active_count() <= before + DEFAULT_PARALLELISM + 8


def test_dynamic_chain_overhead_per_step_is_bounded(measured: Any) -> None:
    env, counter, started = measured
    run = chain(N)
    assert run.metadata["step_counts"] == {"completed": N}
    _check(env, counter, started, N, MAX_CHAIN_WRITES_PER_STEP, MAX_CHAIN_TRANSACTIONS_PER_STEP)


def test_cached_rerun_writes_no_artifacts_and_stays_bounded(measured: Any) -> None:
    env, counter, started = measured
    fan_out(N)
    files_first, _, _ = _files(Path(env.artifact_root))
    first = dict(counter.counts)
    run = fan_out(N)
    steps = N + 2
    assert run.metadata["step_counts"] == {"cached": steps}
    files_second, _, _ = _files(Path(env.artifact_root))
    assert files_second == files_first, "a run of cache hits wrote artifact files"
    second = {k: counter.counts[k] - first[k] for k in first}
    assert second["write"] / steps <= MAX_WRITES_PER_STEP, f"SQL writes per cached step regressed: {second}"
    # a hit reads the step run and its outputs: two lookups per step at most
    assert second["read"] / steps <= 2 * MAX_READS_PER_STEP, f"SQL reads per cached step regressed: {second}"
    assert second["write_tx"] / steps <= MAX_WRITE_TRANSACTIONS_PER_STEP, f"write transactions per cached step regressed: {second}"
