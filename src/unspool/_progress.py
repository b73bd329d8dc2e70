"""What a run shows on the console while it executes.

In a terminal: a live rich view (progress bar, running steps, failures). Elsewhere (a pipe,
a log file, CI) plain lines a person can read at any scale: each failed step when it fails,
a line when a map or product finishes (its steps counted by status), and a progress line
every ``UNSPOOL_PROGRESS_INTERVAL`` seconds (default 5) while steps finish. One line per
finished step only with ``UNSPOOL_PROGRESS=steps`` (``unspool run --verbose``).
``UNSPOOL_PROGRESS=off`` silences all of it (the run summary line stays). Nested runs share
the top-level run's view.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator

from . import _logs
from ._events import Event, events
from ._types import ExecutionStatus

if TYPE_CHECKING:
    from ._engine import Run

_active = threading.local()


def _mode() -> str:
    setting = os.environ.get("UNSPOOL_PROGRESS", "auto").lower()
    if setting in ("off", "0", "false", "no"):
        return "off"
    if setting in ("steps", "verbose"):
        return "steps"
    if setting == "plain":
        return "plain"
    stream = sys.__stderr__
    return "live" if stream is not None and stream.isatty() else "plain"


@contextlib.contextmanager
def console_progress(run: Run) -> Iterator[None]:
    mode = _mode()
    out = sys.__stderr__ or sys.stderr
    print(f"unspool: running pipeline {run.config.name!r} as run {run.name} ({run.id})", file=out)
    started = time.time()
    view: Any = None
    unsubscribe = None
    if mode in ("plain", "steps"):
        view = _PlainView(run, out, per_step=mode == "steps")
        unsubscribe = events.subscribe(view.on_event)
        view.start()
    elif mode == "live":
        view = _LiveView(run)
        unsubscribe = events.subscribe(view.on_event)
        view.start()
    try:
        yield
    finally:
        if unsubscribe:
            unsubscribe()
        if view is not None:
            view.stop()
        _summary(run, time.time() - started, out)


def _step_line(event: Event) -> str:
    detail = f": {event.detail}" if event.detail and event.status != ExecutionStatus.COMPLETED else ""
    return f"unspool: step {event.invocation_id} {event.status.value}{detail}\n"


def _counts(statuses: Any) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status.value] = counts.get(status.value, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


class _PlainView:
    """Plain lines for a pipe: failures at once, maps when they finish, progress periodically."""

    def __init__(self, run: Run, out: Any, per_step: bool) -> None:
        self.run_id = run.id
        self.out = out
        self.per_step = per_step
        self.lock = threading.Lock()
        self.status: dict[str, ExecutionStatus] = {}  # invocation id -> latest status
        self.finished = 0
        self.maps: list[tuple[str, list[str], list[int]]] = []  # (step, members, [finished count])
        self.member_of: dict[str, int] = {}
        self.changed = False
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        try:
            self.interval = float(os.environ.get("UNSPOOL_PROGRESS_INTERVAL", "5"))
        except ValueError:
            self.interval = 5.0

    def on_event(self, event: Event) -> None:
        if event.run_id != self.run_id:
            return
        lines: list[str] = []
        with self.lock:
            if event.kind == "map":
                self._add_map(event, lines)
            elif event.kind == "step" and event.invocation_id is not None:
                key = event.invocation_id
                before = self.status.get(key)
                self.status[key] = event.status
                if event.status.is_finished and (before is None or not before.is_finished):
                    self.finished += 1
                    self.changed = True
                    if self.per_step or event.status == ExecutionStatus.FAILED:
                        lines.append(_step_line(event))
                    index = self.member_of.get(key)
                    if index is not None:
                        self._count(index, lines)
        for line in lines:
            self.out.write(line)

    def _add_map(self, event: Event, lines: list[str]) -> None:
        members = list(event.members)
        if not members:
            return
        index = len(self.maps)
        self.maps.append((event.step_name or "?", members, [0]))
        done = 0
        for key in members:
            self.member_of[key] = index
            status = self.status.get(key)
            if status is not None and status.is_finished:
                done += 1
        self.maps[index][2][0] = done - 1
        self._count(index, lines)

    def _count(self, index: int, lines: list[str]) -> None:
        name, members, done = self.maps[index]
        done[0] += 1
        if done[0] == len(members) and not self.per_step:
            counts = _counts(self.status[k] for k in members)
            lines.append(f"unspool: map {name}: {len(members)} steps finished ({counts})\n")

    def progress_line(self) -> str | None:
        with self.lock:
            if not self.changed:
                return None
            self.changed = False
            finished = [s for s in self.status.values() if s.is_finished]
            running = sum(1 for s in self.status.values() if s == ExecutionStatus.RUNNING)
            return (f"unspool: progress: {len(finished)}/{len(self.status)} steps finished "
                    f"({_counts(finished)}), {running} running\n")

    def start(self) -> None:
        if self.per_step or self.interval <= 0:
            return

        def tick() -> None:
            while not self.stopping.wait(self.interval):
                line = self.progress_line()
                if line:
                    self.out.write(line)

        self.thread = threading.Thread(target=tick, name="unspool-progress", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()


def _summary(run: Run, elapsed: float, out: Any) -> None:
    failure = run.stores.metadata.failure
    if failure is not None:  # the counts below would be what ran, not what is stored
        print(f"unspool: run {run.name} could not be recorded: {failure}", file=out)
        return
    parts = ", ".join(f"{n} {status}" for status, n in sorted(run.status_counts().items())) or "no steps"
    print(
        f"unspool: run {run.name} finished in {elapsed:.2f}s ({parts}). Inspect it with: "
        f"unspool runs show {run.id}",
        file=out,
    )


class _LiveView:
    """A rich Live display fed by events; rendering happens on rich's refresh thread."""

    def __init__(self, run: Run) -> None:
        from rich.console import Console

        self.run = run
        self.console = Console(file=sys.__stderr__)
        self.done = 0
        self.failed: list[str] = []
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()
        self.live: Any = None

    def on_event(self, event: Event) -> None:
        if event.kind != "step":
            return
        with self.lock:
            key = event.invocation_id or ""
            if event.status == ExecutionStatus.RUNNING:
                self.running[key] = event.time
            elif event.status.is_finished:
                self.running.pop(key, None)
                self.done += 1
                if event.status in (ExecutionStatus.FAILED,):
                    self.failed.append(f"{key}: {event.detail}")

    def render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        with self.lock:
            total = max(len(self.run.invocations), 1)
            now = time.time()
            filled = int(40 * self.done / total)
            header = Text(f"{self.run.config.name} ")
            header.append("━" * filled, style="green")
            header.append("━" * (40 - filled), style="grey37")
            header.append(f" {self.done}/{len(self.run.invocations)} finished, {len(self.running)} running, "
                          f"{len(self.failed)} failed")
            shown = list(self.running.items())[:8]
            running = [Text(f"  ▶ {k} ({now - t:.1f}s)", style="cyan") for k, t in shown]
            if len(self.running) > len(shown):
                running.append(Text(f"  … and {len(self.running) - len(shown)} more running", style="cyan"))
            failed = [Text(f"  ✗ {f}", style="red") for f in self.failed[-5:]]
        return Group(header, *running, *failed)

    def start(self) -> None:
        from rich.live import Live

        class _Renderable:
            def __rich__(inner) -> Any:  # noqa: N805
                return self.render()

        self.live = Live(_Renderable(), console=self.console, refresh_per_second=8,
                         redirect_stdout=False, redirect_stderr=False, transient=False)
        self.live.start()
        console = self.console
        _logs.set_echo_sink(lambda text: console.print(text.rstrip("\n"), markup=False, highlight=False))

    def stop(self) -> None:
        if self.live is not None:
            _logs.set_echo_sink(None)
            self.live.refresh()
            self.live.stop()
