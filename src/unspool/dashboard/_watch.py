"""Status changes of runs and steps, from any process writing the store, found by polling.

Only the orchestrating process of a run writes its rows, and it may be another process or
another machine, so the dashboard cannot subscribe to the in-process event bus: it asks the
store, every ``POLL_INTERVAL`` seconds, for what may have changed since the last look. That
is cheap: active runs come from the indexed status column, and of their steps only those
that are new (a position after the last one seen) or that started or ended within the
look-back window come back from the database. Each status is compared with the last one
sent, so a change is pushed once.

The look-back window relies on the timestamps the orchestrating process writes: clocks of
machines sharing a PostgreSQL store must agree within ``LOOK_BACK`` seconds. A change
sequence kept by the store itself would remove that condition (a schema change for the
stores layer).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from .. import _dashboard_queries as q

POLL_INTERVAL = 0.25
LOOK_BACK = 5.0  # seconds: rows are stamped by their writer before its flush commits them


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
        self._runs: dict[str, dict[str, Any]] = {}  # run id -> last seen summary
        self._steps: dict[str, tuple[str, float]] = {}  # step id -> (last status, its latest stamp)
        self._positions: dict[str, int] = {}  # active run id -> last position seen
        self._since: float | None = None
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
        parent = (self._runs.get(run_id) or {}).get("parent_run_id")
        while parent and parent not in seen:
            chain.append(parent)
            seen.add(parent)
            parent = (self._runs.get(parent) or {}).get("parent_run_id")
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
        """One look at the store; returns the changes since the previous look."""
        now = time.time()
        if self.reap is not None and now - self._last_reap > 10:
            self._last_reap = now
            self.reap()
        priming = self._since is None
        since = (now - LOOK_BACK) if priming else self._since
        events: list[dict[str, Any]] = []
        with self.store.read() as conn:
            runs = q.changed_runs(conn, since)
            watch: list[str] = []
            for run in runs:
                before = self._runs.get(run["id"])
                self._runs[run["id"]] = run
                if run["status"] in q.ACTIVE or before is None or before["status"] in q.ACTIVE:
                    watch.append(run["id"])
                if not priming and (before is None or before["status"] != run["status"]):
                    events.append({"kind": "run", **run})
                    if before is not None and before["status"] not in q.ACTIVE:
                        self._positions.pop(run["id"], None)  # resumed: read its steps afresh
            steps: list[dict[str, Any]] = []
            for run_id in watch:
                after = self._positions.get(run_id)
                if after is None:
                    after = q.last_position(conn, run_id) if priming else -1
                changed = q.changed_steps(conn, run_id, after, since)
                steps.extend(changed)
                self._positions[run_id] = max([after, *(s["position"] for s in changed)])
        for step in steps:
            stamp = max(step["start_time"] or 0.0, step["end_time"] or 0.0)
            known = self._steps.get(step["id"])
            self._steps[step["id"]] = (step["status"], stamp)
            if not priming and (known is None or known[0] != step["status"]):
                events.append({"kind": "step", **step})
        self._since = now - LOOK_BACK
        # forget what the window no longer returns, and the runs that ended
        self._steps = {k: v for k, v in self._steps.items() if v[1] >= self._since}
        for run in runs:
            if run["status"] not in q.ACTIVE:
                self._positions.pop(run["id"], None)
        self.polls += 1
        return events
