"""What a run shows on the console while it executes.

In a terminal: a live rich view (progress bar, running steps, failures). Elsewhere: one
plain line per finished step. ``UNSPOOL_PROGRESS=off`` silences both (the run summary
line stays). Nested runs share the top-level run's view.
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
    if mode == "plain":
        unsubscribe = events.subscribe(lambda e: _plain_line(run, e, out))
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


def _plain_line(run: Run, event: Event, out: Any) -> None:
    if event.kind != "step" or not event.status.is_finished:
        return
    if event.run_id != run.id:
        return
    detail = f": {event.detail}" if event.detail and event.status != ExecutionStatus.COMPLETED else ""
    out.write(f"unspool: step {event.invocation_id} {event.status.value}{detail}\n")


def _summary(run: Run, elapsed: float, out: Any) -> None:
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
