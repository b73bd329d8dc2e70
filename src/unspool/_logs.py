"""Per-step log capture that stays correct when many steps run in threads at once.

``sys.stdout`` and ``sys.stderr`` are replaced once by routers that look up the step log
of the *current context* (a ``ContextVar`` set by the thread that runs the step) and write
there; outside a step they write through unchanged. A root ``logging`` handler does the
same for log records. So two steps printing concurrently never see each other's lines.
Captured lines are also echoed to the real console, prefixed with the invocation id.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from typing import Any, Callable, TextIO

_current: contextvars.ContextVar[StepLog | None] = contextvars.ContextVar("unspool_step_log", default=None)
_install_lock = threading.Lock()
_installed = False
_echo_sink: Callable[[str], None] | None = None


class StepLog:
    """The captured text of one step attempt."""

    __slots__ = ("prefix", "parts", "_pending", "echo", "sink", "taken", "closed")

    def __init__(self, prefix: str, echo: bool = True, sink: Callable[[str], None] | None = None) -> None:
        self.prefix = prefix
        self.parts: list[str] = []
        self.taken = 0  # parts[:taken] were handed out already (see take())
        self.closed = False  # the step attempt ended: threads it left behind write to the console
        self._pending: dict[str, str] = {}
        self.echo = echo
        self.sink = sink  # gets every write as it happens (isolated workers stream to the log file)

    def write(self, stream_name: str, text: str, console: TextIO) -> None:
        self.parts.append(text)
        if self.sink is not None:
            self.sink(text)
        if not self.echo:
            return
        # Echo whole lines only, so concurrent steps do not interleave mid-line.
        buffered = self._pending.get(stream_name, "") + text
        *lines, rest = buffered.split("\n")
        self._pending[stream_name] = rest
        if lines:
            _echo(console, "".join(f"[{self.prefix}] {line}\n" for line in lines))

    def finish(self, consoles: dict[str, TextIO]) -> None:
        if self.echo:
            for stream_name, rest in self._pending.items():
                if rest:
                    _echo(consoles[stream_name], f"[{self.prefix}] {rest}\n")
        self._pending.clear()

    def text(self) -> str:
        return "".join(self.parts)

    def take(self) -> str:
        """The text written since the last take (a timed-out step's log so far, then the rest)."""
        end = len(self.parts)
        text = "".join(self.parts[self.taken:end])
        self.taken = end
        return text


_live: dict[str, StepLog] = {}  # key -> the log of a step attempt still running (see capture)


def take_live(key: str) -> str | None:
    """What a running step attempt captured since the last take; None if it is not running."""
    log = _live.get(key)
    return None if log is None else log.take()


class _StreamRouter:
    def __init__(self, name: str, original: TextIO) -> None:
        self._name = name
        self._original = original

    def write(self, text: str) -> int:
        log = _current.get()
        if log is None or log.closed:
            return self._original.write(text)
        log.write(self._name, text, self._original)
        return len(text)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class _StepLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log = _current.get()
        if log is None or log.closed:
            _outside_step(self, record)
            return
        try:
            log.write("stderr", self.format(record) + "\n", _console("stderr"))
        except Exception:  # pragma: no cover - logging must never break a step
            self.handleError(record)


def _outside_step(ours: logging.Handler, record: logging.LogRecord) -> None:
    """A record from the body or the script: do what logging does without unspool.

    Adding a root handler switches off Python's last-resort handler (WARNING and above to
    stderr when no handler is configured); when no handler but ours would see the record,
    hand it to the last resort, as if unspool were not there.
    """
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(h is not ours for h in logger.handlers):
            return  # the user configured logging: their handlers saw it
        if not logger.propagate:
            break
        logger = logger.parent
    last_resort = logging.lastResort
    if last_resort is not None and record.levelno >= last_resort.level:
        last_resort.handle(record)


def _console(name: str) -> TextIO:
    stream = getattr(sys, name)
    return stream._original if isinstance(stream, _StreamRouter) else stream


def install() -> None:
    """Route stdout, stderr and logging through the per-step capture (idempotent)."""
    global _installed
    if _installed and isinstance(sys.stdout, _StreamRouter) and isinstance(sys.stderr, _StreamRouter):
        return
    with _install_lock:
        if not isinstance(sys.stdout, _StreamRouter):
            sys.stdout = _StreamRouter("stdout", sys.stdout)  # type: ignore[assignment]
        if not isinstance(sys.stderr, _StreamRouter):
            sys.stderr = _StreamRouter("stderr", sys.stderr)  # type: ignore[assignment]
        if not _installed:
            handler = _StepLogHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(handler)
            _follow_threads()
        _installed = True


def _follow_threads() -> None:
    """A thread started while a step runs (``threading.Thread``, a ``ThreadPoolExecutor`` the
    step made) writes into that step's log: a new thread starts with an empty context, so
    ``Thread.start`` hands it the step log of the thread that started it."""
    original_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        log = _current.get()
        if log is not None and not self.name.startswith("unspool-"):
            run = self.run

            def run_in_step_log() -> None:
                _current.set(log)
                run()

            self.run = run_in_step_log  # type: ignore[method-assign]
        original_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]

    # A pool's threads outlive the task that started them: each task writes where the code
    # that submitted it writes (a step's log, or the console outside steps).
    from concurrent.futures import ThreadPoolExecutor

    original_submit = ThreadPoolExecutor.submit

    def submit(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_thread_name_prefix", "").startswith("unspool-"):
            return original_submit(self, fn, *args, **kwargs)
        log = _current.get()

        def in_submitters_log(*a: Any, **kw: Any) -> Any:
            token = _current.set(log)
            try:
                return fn(*a, **kw)
            finally:
                _current.reset(token)

        return original_submit(self, in_submitters_log, *args, **kwargs)

    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]


def _echo(console: TextIO, text: str) -> None:
    sink = _echo_sink
    if sink is None:
        console.write(text)
    else:
        sink(text)


def set_echo_sink(sink: Callable[[str], None] | None) -> None:
    """Send console echoes of step output through ``sink`` (a live view prints them above itself)."""
    global _echo_sink
    _echo_sink = sink


def capture(
    prefix: str, fn: Callable[[], Any], sink: Callable[[str], None] | None = None, key: str | None = None
) -> tuple[Any, BaseException | None, str]:
    """Run ``fn`` with its output captured; returns (value, exception, text).

    With ``key``, the log can be read while ``fn`` runs (``take_live``); the text returned is
    then what was not taken yet.
    """
    install()
    log = StepLog(prefix, sink=sink)
    if key is not None:
        _live[key] = log
    token = _current.set(log)
    try:
        value, error = fn(), None
    except BaseException as exc:  # noqa: BLE001 - reported as the step's failure
        value, error = None, exc
    finally:
        _current.reset(token)
        log.finish({"stdout": _console("stdout"), "stderr": _console("stderr")})
        log.closed = True
        if key is not None:
            _live.pop(key, None)
    return value, error, log.take()
