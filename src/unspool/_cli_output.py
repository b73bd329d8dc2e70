"""Shared by the command groups of the ``unspool`` command: output, errors, the client.

Everything heavy (rich, the client and SQLAlchemy behind it) is imported inside the
functions so ``unspool --help`` stays quick.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import typer

from ._errors import RunOwnershipLostError, StoreError, UnspoolError, mask_secrets
from ._types import ExecutionStatus

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from ._client import Client, PipelineRun

F = TypeVar("F", bound=Callable[..., Any])

_STATUS_STYLE = {
    ExecutionStatus.INITIALIZING: "dim",
    ExecutionStatus.RUNNING: "yellow",
    ExecutionStatus.COMPLETED: "green",
    ExecutionStatus.FAILED: "red",
    ExecutionStatus.CACHED: "cyan",
    ExecutionStatus.STOPPED: "magenta",
    ExecutionStatus.SKIPPED: "dim",
}

# Mermaid fill/stroke per status; "external" marks an upstream step of another (parent) run.
_MERMAID_STYLE = {
    "initializing": "fill:#eeeeee,stroke:#999999",
    "running": "fill:#fff3cd,stroke:#d39e00",
    "completed": "fill:#d4edda,stroke:#28a745",
    "failed": "fill:#f8d7da,stroke:#dc3545",
    "cached": "fill:#d1ecf1,stroke:#17a2b8",
    "stopped": "fill:#e2d9f3,stroke:#6f42c1",
    "skipped": "fill:#eeeeee,stroke:#999999,stroke-dasharray:4 2",
    "external": "fill:#ffffff,stroke:#999999,stroke-dasharray:2 2",
}


class CliError(UnspoolError):
    """A mistake on the command line itself (bad FILE:PIPELINE, bad --param, missing file)."""


@dataclass
class _State:
    debug: bool = False


_state = _State()


class DagFormat(str, Enum):
    text = "text"
    mermaid = "mermaid"


# -- output helpers ------------------------------------------------------------------------------

def _client() -> Client:
    """A client on the current stores, after marking runs whose orchestrator died as stopped
    (reading never writes; every command that shows runs reaps first, explicitly)."""
    from ._client import Client  # lazy: keeps `unspool --help` quick

    client = Client()
    client.reap_dead_runs()
    return client


def _out() -> Console:
    """A stdout console; piped output is not wrapped at 80 columns (tables stay greppable)."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(highlight=False, width=240)
    return console


def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _one_line(text: str) -> str:
    """One line of text for the terminal, with the password of any URL in it masked."""
    return mask_secrets(" ".join(str(text).split()))


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print one red line on stderr; the caller raises the returned Exit."""
    from rich.text import Text

    _err().print(Text(f"error: {_one_line(message)}", style="red"), soft_wrap=True)
    return typer.Exit(code)


def _friendly_errors(func: F) -> F:
    """Turn errors into one red stderr line and exit code 2, unless ``--debug`` was given."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except Exception as exc:
            if _state.debug:
                raise
            if isinstance(exc, UnspoolError):
                message = str(exc)
            else:
                message = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
            raise _fail(message) from None

    return wrapper  # type: ignore[return-value]


def _status(status: ExecutionStatus | str) -> Text:
    from rich.text import Text

    status = ExecutionStatus(status)
    return Text(status.value, style=_STATUS_STYLE.get(status, ""))


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _fmt_time(value: Any, fmt: str | None = None) -> str:
    return "-" if value is None else value.strftime(fmt or "%Y-%m-%d %H:%M:%S")


def _fmt_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def _short_type(data_type: str) -> str:
    module, _, qualname = data_type.partition(":")
    return qualname if module == "builtins" or not qualname else f"{module}.{qualname}"


def _json(value: Any) -> str:
    return json.dumps(value, default=repr, sort_keys=True)


def _run_duration(run: PipelineRun) -> float | None:
    if run.duration is not None:
        return run.duration
    if run.start_time is not None and not run.status.is_finished:
        return time.time() - run.start_time.timestamp()
    return None


def _step_count(run: PipelineRun) -> str:
    counts: dict[str, int] = (run.metadata or {}).get("step_counts") or {}
    if not counts:  # still running (or recorded by an older version): the store counts the rows
        counts = run.status_counts()
    total = sum(counts.values())
    failed = counts.get(ExecutionStatus.FAILED.value, 0)
    return f"{total} ({failed} failed)" if failed else str(total)


def _report_failure(run: PipelineRun) -> None:
    from rich.text import Text

    message = (run.error or {}).get("message") or "see `unspool runs show`"
    err = _err()
    err.print(Text(f"run {run.name} failed: {_one_line(message)}", style="red"), soft_wrap=True)
    failed = run.failed_steps
    if failed:
        err.print(f"see what it printed with: unspool logs {run.id} {failed[0]}", markup=False, soft_wrap=True)


def _execute(start: Callable[[], Any]) -> None:
    """Call ``start`` (which runs a pipeline); exit 1 when the run it started did not succeed.

    The run is known from the exception the engine raises (it carries ``run_id``), from
    the returned run, or else from the first run event seen: an error raised before any run
    started is a usage error and propagates (exit 2).
    """
    from ._events import Event, events  # lazy: keeps `unspool --help` quick

    seen: list[str] = []

    def remember(event: Event) -> None:
        if event.kind == "run" and not seen:
            seen.append(event.run_id)

    unsubscribe = events.subscribe(remember)
    try:
        result = start()
    except Exception as exc:
        run_id = getattr(exc, "run_id", None) or (seen[0] if seen else None)
        if run_id is None or _state.debug or isinstance(exc, RunOwnershipLostError):
            raise  # a run another process took over is that process's to report
        if isinstance(exc, StoreError):
            # The store could not record the run: what it holds is stale, and the run's summary
            # line has said why already (``_progress._summary``).
            raise typer.Exit(1) from None
        _report_failure(_client().get_pipeline_run(run_id))
        raise typer.Exit(1) from None
    finally:
        unsubscribe()
    run_id = getattr(result, "id", None)
    if not isinstance(run_id, str):
        run_id = seen[0] if seen else None
    if run_id is None:
        return
    finished = _client().get_pipeline_run(run_id)
    if not finished.status.is_successful:
        _report_failure(finished)
        raise typer.Exit(1)
