"""Status changes of runs and steps, from any process writing the store, found by polling.

Only the orchestrating process of a run writes its rows, and it may be another process or
another machine, so the dashboard cannot subscribe to the in-process event bus: it asks the
store, every ``POLL_INTERVAL`` seconds, what changed since the last look. The store keeps an
exact change cursor for that (``_schema.change_counter``): every write transaction that
inserts or updates run or step rows stamps them with its own number, and those transactions
commit in number order. A look reads the counter (N), then the rows stamped after the last N
seen and up to N, from the indexed ``changed`` columns; nothing depends on anyone's clock, so
no change is missed and none is read twice. A status is sent when it differs from the last
one sent for that row, so a row rewritten without a new status (a heartbeat, metadata) sends
nothing; the first look only learns where the cursor is.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from .. import _dashboard_queries as q

POLL_INTERVAL = 0.25


class Watcher:
    """One polling thread per dashboard, running while anyone listens."""

    def __init__(self, store: Any, reap: Callable[[], Any] | None = None, interval: float = POLL_INTERVAL) -> None:
        self.store = store
        self.reap = reap
        self.interval = interval
        self._listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cursor: int | None = None  # the change counter at the last look
        self._status: dict[str, str] = {}  # run id -> the last status sent (or learnt)
        self._parents: dict[str, str | None] = {}  # run id -> its parent run id, for root_of
        self._steps: dict[str, dict[str, str]] = {}  # unfinished run id -> step id -> last status sent
        self.polls = 0
        self.last_poll_s = 0.0
        self._last_reap = 0.0

    def subscribe(self, fn: Callable[[list[dict[str, Any]]], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(fn)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, name="unspool-dashboard-watch", daemon=True)
                self._thread.start()

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return unsubscribe

    def close(self) -> None:
        self._stop.set()

    def root_of(self, run_id: str) -> list[str]:
        """``run_id`` and its ancestors, as far as the watcher has seen them."""
        chain = [run_id]
        seen = {run_id}
        parent = self._parents.get(run_id)
        while parent and parent not in seen:
            chain.append(parent)
            seen.add(parent)
            parent = self._parents.get(parent)
        return chain

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                events = self.poll()
            except Exception as exc:  # a store hiccup: report, try again
                events = [{"kind": "error", "message": f"{type(exc).__name__}: {exc}"}]
            with self._lock:
                listeners = list(self._listeners)
            if events:
                for fn in listeners:
                    fn(events)
            self.last_poll_s = time.monotonic() - started
            self._stop.wait(max(0.0, self.interval - self.last_poll_s))

    def poll(self) -> list[dict[str, Any]]:
        """One look at the store; returns the changes since the previous look, in the order
        they were committed (within one transaction: runs that go on, steps by position, runs
        that ended)."""
        now = time.time()
        if self.reap is not None and now - self._last_reap > 10:
            self._last_reap = now
            self.reap()
        with self.store.read() as conn:
            upto = q.change_cursor(conn)
            after, self._cursor = self._cursor, upto
            if after is None or upto <= after:
                self.polls += 1
                return []
            runs = q.changed_runs(conn, after, upto)
            steps = q.changed_steps(conn, after, upto)
            self._learn_parents(conn, runs, steps)
        ranked: list[tuple[int, int, int, dict[str, Any]]] = []
        for run in runs:
            if self._status.get(run["id"]) != run["status"]:
                self._status[run["id"]] = run["status"]
                ranked.append((run["changed"], 0 if run["status"] in q.ACTIVE else 2, 0, {"kind": "run", **run}))
        for step in steps:
            known = self._steps.setdefault(step["run_id"], {})
            if known.get(step["id"]) != step["status"]:
                known[step["id"]] = step["status"]
                ranked.append((step["changed"], 1, step["position"], {"kind": "step", **step}))
        for run in runs:  # an ended run's steps are forgotten: a later change of one is news
            if run["status"] not in q.ACTIVE:
                self._steps.pop(run["id"], None)
        ranked.sort(key=lambda r: r[:3])
        self.polls += 1
        return [event for *_, event in ranked]

    def _learn_parents(self, conn: Any, runs: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
        """Remember the parent of every run these changes name, up to the root (``root_of``)."""
        for run in runs:
            self._parents[run["id"]] = run["parent_run_id"]
        unknown = {s["run_id"] for s in steps} | {r["parent_run_id"] for r in runs if r["parent_run_id"]}
        unknown -= self._parents.keys()
        while unknown:
            found = q.runs_by_id(conn, sorted(unknown))
            for run in found:
                self._parents[run["id"]] = run["parent_run_id"]
            for run_id in unknown - self._parents.keys():
                self._parents[run_id] = None  # deleted meanwhile
            unknown = {r["parent_run_id"] for r in found if r["parent_run_id"]} - self._parents.keys()
