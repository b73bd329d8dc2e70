"""The ``unspool`` command line: run a pipeline from a file and read back what the stores hold.

Commands
--------
``init``                      create the ``.unspool/`` home (see ``_settings.find_home``).
``run FILE.py:PIPELINE``      import the file by path and run the pipeline; exit 0 when the
                              run completed, 1 when it failed. The live view while it runs
                              comes from ``_progress``; this module only reports the outcome.
``runs list|show|dag``        runs, one run with its steps and child runs, a run's DAG.
``runs resume RUN``           run a failed or stopped run again as the same run.
``logs RUN [STEP]``           the captured output of one step or of all steps of a run.
``artifacts list|show``       artifact names and versions, one version with a value preview.
``snapshots create FILE.py:PIPELINE --name N [--config C]``
                              store a runnable reference to the pipeline (configured from C).
``snapshots list``            the stored snapshots, newest first.
``snapshots trigger NAME_OR_ID [--param k=v ...]``
                              run a snapshot in a separate process; exit 0 when the run
                              completed, 1 when it failed.

Failure policy
--------------
A mistake the user can fix (unknown run, bad ``FILE:PIPELINE``, bad ``--param``, any
:class:`UnspoolError`) is one red line on stderr and exit code 2, never a traceback: the
message already says what to do. The global ``--debug`` option re-raises instead. A failed
*run* is not such a mistake: it is recorded, reported and gives exit code 1.

Everything is read through :class:`unspool.Client`; the client (and SQLAlchemy behind it) is
imported inside the commands so ``unspool --help`` stays quick.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Callable, TypeVar

import typer

from ._errors import NotFoundError, UnspoolError
from ._types import ExecutionStatus

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from ._client import ArtifactVersion, Client, PipelineRun, StepRun
    from ._pipeline import Pipeline

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

_PREVIEW_CHARS = 400

# ``--param k=v`` of ``run`` and ``snapshots trigger`` (parsed by ``_parse_params``).
_ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param", "-p", metavar="KEY=VALUE",
        help="A pipeline parameter (repeatable); VALUE is parsed as JSON when it parses, else a string.",
    ),
]


class CliError(UnspoolError):
    """A mistake on the command line itself (bad FILE:PIPELINE, bad --param, missing file)."""


@dataclass
class _State:
    debug: bool = False


_state = _State()


class DagFormat(str, Enum):
    text = "text"
    mermaid = "mermaid"


app = typer.Typer(
    name="unspool",
    help="Run tracked pipelines and inspect their runs, steps, logs and artifacts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
runs_app = typer.Typer(help="Inspect pipeline runs.", no_args_is_help=True)
artifacts_app = typer.Typer(help="Inspect artifacts and their versions.", no_args_is_help=True)
snapshots_app = typer.Typer(
    help="Store runnable references to pipelines (snapshots) and trigger runs of them.",
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")
app.add_typer(artifacts_app, name="artifacts")
app.add_typer(snapshots_app, name="snapshots")


def main() -> None:
    """Entry point of the ``unspool`` script and of ``python -m unspool``."""
    app(prog_name="unspool")


# -- output helpers ------------------------------------------------------------------------------

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
    return " ".join(str(text).split())


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
    if not counts:  # still running (or recorded by an older version): count the rows
        counts = {}
        for s in run.steps.values():
            counts[s.status.value] = counts.get(s.status.value, 0) + 1
    total = sum(counts.values())
    failed = counts.get(ExecutionStatus.FAILED.value, 0)
    return f"{total} ({failed} failed)" if failed else str(total)


# -- init ----------------------------------------------------------------------------------------

def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"unspool {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Re-raise errors with their traceback instead of one line.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run tracked pipelines and inspect their runs, steps, logs and artifacts."""
    _state.debug = debug


@app.command()
@_friendly_errors
def init() -> None:
    """Create the unspool home (.unspool/: metadata and artifact stores) and say where it is."""
    from ._engine import get_environment
    from ._settings import find_home, resolve_location

    existed = find_home(create=False).is_dir()
    location = resolve_location()
    env = get_environment()  # opens (and migrates) the metadata store
    env.artifacts.fs.makedirs(env.artifacts.root, exist_ok=True)
    out = _out()
    verb = "found existing" if existed else "created"
    out.print(f"{verb} unspool home at {location.home}", markup=False)
    out.print(f"  metadata store: {location.store_url}", markup=False)
    out.print(f"  artifact store: {location.artifact_root}", markup=False)
    if os.environ.get("UNSPOOL_HOME"):
        out.print("  (chosen by UNSPOOL_HOME)", style="dim")


# -- run -----------------------------------------------------------------------------------------

def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; a value that parses as JSON is that value, anything else a string."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CliError(f"--param expects KEY=VALUE with KEY a parameter name, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def _import_file(path: Path) -> ModuleType:
    """Import a Python file by path (``_loading`` keeps step functions importable by name)."""
    from ._loading import load_file

    try:
        return load_file(path)
    except Exception as exc:
        raise CliError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc


def _load_pipeline(target: str) -> Pipeline[Any]:
    """Resolve ``FILE.py:PIPELINE`` (the name may be left out when the file has one pipeline)."""
    return _load_pipeline_and_name(target)[0]


def _load_pipeline_and_name(target: str) -> tuple[Pipeline[Any], str]:
    """The pipeline ``FILE.py:PIPELINE`` names, and its attribute name in the file."""
    import inspect

    from ._pipeline import Pipeline
    from ._step import Step

    file_part, sep, attr = target.rpartition(":")
    if not sep or "/" in attr or "\\" in attr:
        file_part, attr = target, ""
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise CliError(f"file {file_part!r} not found; expected FILE.py:PIPELINE, e.g. flows/train.py:training")
    module = _import_file(path.resolve())
    found = sorted(n for n, v in vars(module).items() if isinstance(v, Pipeline))
    if not attr:
        if len(found) == 1:
            return getattr(module, found[0]), found[0]
        listing = ", ".join(found) if found else "none"
        raise CliError(f"name the pipeline to run as {file_part}:PIPELINE (pipelines in the file: {listing})")
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(
                f"{file_part} has no {attr!r}; pipelines defined there: {', '.join(found) or 'none'}"
            )
        obj = getattr(obj, part)
    if isinstance(obj, Pipeline):
        return obj, attr
    if isinstance(obj, Step):
        hint = "it is a step; run a @pipeline that calls it"
    elif inspect.isfunction(obj):
        hint = "decorate it with @pipeline"
    else:
        hint = f"pipelines defined there: {', '.join(found) or 'none'}"
    raise CliError(f"{file_part}:{attr} is a {type(obj).__name__}, not an unspool pipeline; {hint}")


def _report_failure(run: PipelineRun) -> None:
    from rich.text import Text

    message = (run.error or {}).get("message") or "see `unspool runs show`"
    err = _err()
    err.print(Text(f"run {run.name} failed: {_one_line(message)}", style="red"), soft_wrap=True)
    failed = run.failed_steps
    if failed:
        err.print(f"see what it printed with: unspool logs {run.id} {failed[0]}", markup=False, soft_wrap=True)


@app.command()
@_friendly_errors
def run(
    target: Annotated[
        str,
        typer.Argument(metavar="FILE.py:PIPELINE", help="Python file and the pipeline object in it."),
    ],
    param: _ParamOption = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="A YAML run configuration file.")
    ] = None,
) -> None:
    """Run a pipeline defined in a Python file. Exit code 0: completed, 1: failed."""
    params = _parse_params(param or [])
    pipe = _load_pipeline(target)
    if config is not None:
        if not config.is_file():
            raise CliError(f"config file {str(config)!r} not found")
        pipe = pipe.with_options(config_path=str(config.resolve()))
    _execute(lambda: pipe(**params))


def _execute(start: Callable[[], Any]) -> None:
    """Call ``start`` (which runs a pipeline); exit 1 when the run it started did not succeed.

    The run is known from the exception the engine raises (it carries ``run_id``), from
    the returned run, or else from the first run event seen: an error raised before any run
    started is a usage error and propagates (exit 2).
    """
    from ._client import Client
    from ._events import Event, events

    seen: list[str] = []

    def remember(event: Event) -> None:
        if event.kind == "run" and not seen:
            seen.append(event.run_id)

    unsubscribe = events.subscribe(remember)
    try:
        result = start()
    except Exception as exc:
        run_id = getattr(exc, "run_id", None) or (seen[0] if seen else None)
        if run_id is None or _state.debug:
            raise
        _report_failure(Client().get_pipeline_run(run_id))
        raise typer.Exit(1) from None
    finally:
        unsubscribe()
    run_id = getattr(result, "id", None)
    if not isinstance(run_id, str):
        run_id = seen[0] if seen else None
    if run_id is None:
        return
    finished = Client().get_pipeline_run(run_id)
    if not finished.status.is_successful:
        _report_failure(finished)
        raise typer.Exit(1)


# -- runs ----------------------------------------------------------------------------------------

@runs_app.command("list")
@_friendly_errors
def runs_list(
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="Only runs of this pipeline.")] = None,
    status: Annotated[
        ExecutionStatus | None, typer.Option("--status", "-s", case_sensitive=False, help="Only runs with this status.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many runs.")] = 20,
) -> None:
    """List runs, newest first."""
    from rich.table import Table

    from ._client import Client

    runs = Client().list_pipeline_runs(pipeline_name=pipeline, status=status, limit=limit)
    out = _out()
    if not runs:
        filtered = pipeline is not None or status is not None
        out.print("no runs match" if filtered else "no runs yet; start one with `unspool run FILE.py:PIPELINE`",
                  style="dim", markup=False)
        return
    # Narrow terminals: one space between columns and no year, so names fold instead of the
    # right-hand columns disappearing.
    narrow = out.width < 120
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0) if narrow else (0, 1))
    for column in ("id", "name", "pipeline", "status", "steps", "start", "duration"):
        table.add_column(column, no_wrap=column != "name", overflow="fold", min_width=16 if column == "name" else None, justify="right" if column in ("steps", "duration") else "left")
    for r in runs:
        name = f"↳ {r.name}" if r.parent_run_id else r.name  # a child run of another run
        table.add_row(r.id[:8], name, r.pipeline_name, _status(r.status), _step_count(r),
                      _fmt_time(r.start_time, "%m-%d %H:%M" if narrow else None), _fmt_duration(_run_duration(r)))
    out.print(table)


def _budget_line(run: PipelineRun) -> str | None:
    """``used/limit`` per budget dimension, from the run's config and metadata."""
    used: dict[str, Any] = (run.metadata or {}).get("budget_used") or {}
    limits: dict[str, Any] = (run.config or {}).get("budget") or {}
    if not used and not limits:
        return None
    parts = []
    for used_key, limit_key in (("steps", "max_steps"), ("duration_s", "max_duration_s"),
                                ("max_parallelism", "max_parallelism")):
        value, limit = used.get(used_key), limits.get(limit_key)
        if value is None and limit is None:
            continue
        shown = "?" if value is None else value
        parts.append(f"{used_key} {shown}" + ("" if limit is None else f"/{limit}"))
    for key, limit in limits.items():
        if key in ("max_fan_out", "max_depth") and limit is not None:
            parts.append(f"{key} {limit}")
    for key, value in used.items():
        if key not in ("steps", "duration_s", "max_parallelism"):
            parts.append(f"{key} {value}")
    return ", ".join(parts) or None


def _cached_origins(client: Client, steps: list[StepRun]) -> dict[str, str]:
    """``step run id -> "run name / invocation"`` of the originals of cached steps, in one query."""
    import sqlalchemy as sa

    from ._metadata_store import pipeline_runs, step_runs

    wanted = sorted({s.original_step_run_id for s in steps if s.original_step_run_id})
    rows: list[Any] = []
    with client.store.read() as conn:
        for i in range(0, len(wanted), 500):
            rows.extend(conn.execute(
                sa.select(step_runs.c.id, step_runs.c.invocation_id, pipeline_runs.c.name)
                .join(pipeline_runs, pipeline_runs.c.id == step_runs.c.run_id)
                .where(step_runs.c.id.in_(wanted[i : i + 500]))
            ).all())
    return {r.id: f"{r.name} / {r.invocation_id}" for r in rows}


def _cached_cell(step: StepRun, origins: dict[str, str]) -> str:
    if step.status != ExecutionStatus.CACHED:
        return "no"
    if step.original_step_run_id is None:
        return "yes"
    origin = origins.get(step.original_step_run_id)
    return f"yes, from {origin}" if origin else "yes (original deleted)"


def _add_children(node: Any, run: PipelineRun, depth: int = 0) -> None:
    from rich.text import Text

    for child in run.child_runs:
        label = Text.assemble(
            (child.invocation_id or child.pipeline_name, "bold"), " ", _status(child.status),
            f"  {child.name} [{child.id[:8]}]  {_step_count(child)} steps  {_fmt_duration(_run_duration(child))}",
        )
        branch = node.add(label)
        if depth < 20:
            _add_children(branch, child, depth + 1)


@runs_app.command("show")
@_friendly_errors
def runs_show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix (6+ characters) or name.")],
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=0, help="Show at most this many steps (0: all of them).")
    ] = 200,
) -> None:
    """Show one run: its header, its steps and its child runs."""
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

    from ._client import Client

    client = Client()
    run = client.get_pipeline_run(run_ref)
    out = _out()

    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold", no_wrap=True)
    header.add_column()
    header.add_row("id", run.id)
    header.add_row("name", run.name)
    header.add_row("pipeline", f"{run.pipeline_name} ({'dynamic' if run.dynamic else 'static'})")
    header.add_row("status", _status(run.status))
    if run.parent_run_id:
        header.add_row("parent run", f"{run.parent_run_id} (as {run.invocation_id})")
    header.add_row("started", _fmt_time(run.start_time))
    header.add_row("duration", _fmt_duration(_run_duration(run)))
    header.add_row("parameters", Text(_json(run.parameters or {})))
    if run.error:
        message = run.error.get("message") or _json(run.error)
        header.add_row("error", Text(_one_line(message), style="red"))
    budget = _budget_line(run)
    if budget:
        header.add_row("budget", budget)
    extra = {k: v for k, v in (run.metadata or {}).items() if k not in ("step_counts", "budget_used")}
    if extra:
        header.add_row("metadata", Text(_json(extra)))
    out.print(header)

    steps = run.steps
    out.print()
    if not steps:
        out.print("no steps recorded", style="dim")
    else:
        counts: dict[str, int] = {}
        for s in steps.values():
            counts[s.status.value] = counts.get(s.status.value, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        table = Table(title=f"{len(steps)} steps ({summary})", title_justify="left", box=None,
                      header_style="bold", pad_edge=False)
        for column in ("invocation", "step", "status", "duration", "cached", "runtime", "attempts"):
            table.add_column(column, justify="right" if column in ("duration", "attempts") else "left")
        shown = list(steps.values())[: limit or None]
        origins = _cached_origins(client, shown)
        for s in shown:
            attempts = str(len(s.attempts)) if s.attempts else "-"
            table.add_row(Text(s.invocation_id), Text(s.name), _status(s.status), _fmt_duration(s.duration),
                          Text(_cached_cell(s, origins)), s.runtime, attempts)
        out.print(table)
        if len(shown) < len(steps):
            out.print(f"… {len(steps) - len(shown)} more steps (--limit 0 shows all)", style="dim", markup=False)
        failed = [s for s in steps.values() if s.status == ExecutionStatus.FAILED]
        for s in failed[:20]:
            err = s.error or {}
            out.print(Text(f"✗ {s.invocation_id}: {err.get('type', 'Error')}: {_one_line(err.get('message', ''))}",
                           style="red"))
        if len(failed) > 20:
            out.print(f"… and {len(failed) - 20} more failed steps", style="red", markup=False)
        if failed:
            out.print(f"logs of a step: unspool logs {run.id[:8]} {failed[0].invocation_id}", style="dim", markup=False)

    if run.child_runs:
        out.print()
        tree = Tree(Text("child runs", style="bold"))
        _add_children(tree, run)
        out.print(tree)


@runs_app.command("resume")
@_friendly_errors
def runs_resume(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix (6+ characters) or name.")],
) -> None:
    """Run a failed or stopped run again as the same run, reusing the steps that completed."""
    from ._client import Client

    client = Client()
    resume = getattr(client, "resume_pipeline_run", None)
    if resume is None:
        raise CliError("this version of unspool cannot resume runs")
    run = client.get_pipeline_run(run_ref)  # resolves id prefixes too
    _execute(lambda: resume(run.id))


def _dag_of(run: PipelineRun) -> tuple[list[str], list[tuple[str, str]]]:
    """Nodes and edges: the stored DAG of a static run, else the steps' recorded upstreams."""
    nodes: list[str] = []
    edges: list[tuple[str, str]] = []
    if not run.dynamic and run.dag:
        nodes = [str(n["id"]) for n in run.dag.get("nodes", [])]
        edges = [(str(a), str(b)) for a, b in run.dag.get("edges", [])]
    for s in run.steps.values():  # dynamic runs; and static runs that stopped before storing a DAG
        if s.invocation_id not in nodes:
            nodes.append(s.invocation_id)
        if not (not run.dynamic and run.dag):
            edges.extend((up, s.invocation_id) for up in s.upstream)
    unique_edges = list(dict.fromkeys(edges))
    for a, b in unique_edges:
        for n in (a, b):
            if n not in nodes:
                nodes.append(n)
    return nodes, unique_edges


def _dag_text(nodes: list[str], edges: list[tuple[str, str]]) -> str:
    linked = {n for edge in edges for n in edge}
    lines = [f"{a} -> {b}" for a, b in edges] + [n for n in nodes if n not in linked]
    return "\n".join(lines)


def _mermaid_ids(nodes: list[str]) -> dict[str, str]:
    """Safe, readable Mermaid node ids (``s_`` keeps words like ``end`` from being keywords)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for n in nodes:
        base = "s_" + "".join(c if c.isalnum() or c == "_" else "_" for c in n)
        candidate, i = base, 2
        while candidate in used:
            candidate, i = f"{base}_{i}", i + 1
        used.add(candidate)
        ids[n] = candidate
    return ids


def _dag_mermaid(nodes: list[str], edges: list[tuple[str, str]], statuses: dict[str, str]) -> str:
    ids = _mermaid_ids(nodes)
    lines = ["graph TD"]
    for n in nodes:
        status = statuses.get(n, "external")
        label = n.replace('"', "#quot;")
        lines.append(f'    {ids[n]}["{label}<br/>{status}"]:::{status}')
    lines.extend(f"    {ids[a]} --> {ids[b]}" for a, b in edges)
    for status in dict.fromkeys(statuses.get(n, "external") for n in nodes):
        lines.append(f"    classDef {status} {_MERMAID_STYLE.get(status, _MERMAID_STYLE['external'])}")
    return "\n".join(lines)


@runs_app.command("dag")
@_friendly_errors
def runs_dag(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix (6+ characters) or name.")],
    fmt: Annotated[
        DagFormat | None,
        typer.Option("--format", "-f", case_sensitive=False, help="text or mermaid (default: both)."),
    ] = None,
) -> None:
    """Print a run's DAG: one `a -> b` line per edge, and/or a Mermaid graph."""
    from ._client import Client

    run = Client().get_pipeline_run(run_ref)
    nodes, edges = _dag_of(run)
    statuses = {inv: s.status.value for inv, s in run.steps.items()}
    parts = []
    if fmt in (None, DagFormat.text):
        parts.append(_dag_text(nodes, edges))
    if fmt in (None, DagFormat.mermaid):
        parts.append(_dag_mermaid(nodes, edges, statuses))
    typer.echo("\n\n".join(p for p in parts if p) or "(no steps)")


# -- logs ----------------------------------------------------------------------------------------

@app.command()
@_friendly_errors
def logs(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix (6+ characters) or name.")],
    step: Annotated[
        str | None, typer.Argument(metavar="STEP", help="A step name (all its invocations) or one invocation id; default: all steps.")
    ] = None,
) -> None:
    """Print the captured stdout, stderr and logging output of a run's steps."""
    from ._client import Client

    run = Client().get_pipeline_run(run_ref)
    steps = run.steps
    # A step name selects all its invocations (the first one's id *is* the step name, so
    # names are tried first); `square_2` then picks one invocation.
    if step is None:
        selected, headers = list(steps.values()), True
    else:
        selected = [s for s in steps.values() if s.name == step] or [s for s in steps.values() if s.invocation_id == step]
        headers = len(selected) > 1
        if not selected:
            known = list(steps)
            shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
            raise NotFoundError(f"run {run.name} has no step {step!r}; its steps are: {shown or 'none'}")
    if not selected:
        _err().print(f"run {run.name} has no steps", style="dim", markup=False)
        return
    for i, s in enumerate(selected):
        text = s.logs
        if headers:
            typer.echo(("\n" if i else "") + f"==> {s.invocation_id} ({s.status.value}) <==")
            typer.echo(text.rstrip("\n") if text else "(no output captured)")
        elif text:
            typer.echo(text, nl=not text.endswith("\n"))
        else:
            _err().print(f"step {s.invocation_id} captured no output", style="dim", markup=False)


# -- dashboard -----------------------------------------------------------------------------------

@app.command()
@_friendly_errors
def dashboard(
    host: Annotated[str, typer.Option("--host", help="Address to bind; any non-loopback one requires a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8237,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="UNSPOOL_DASHBOARD_TOKEN", help="Token every request must carry off loopback (default: generated and printed once)."),
    ] = None,
) -> None:
    """Serve the web dashboard and its JSON API over this project's stores."""
    from .dashboard import serve

    serve(host, port, token)


# -- snapshots -----------------------------------------------------------------------------------

@snapshots_app.command("create")
@_friendly_errors
def snapshots_create(
    target: Annotated[str, typer.Argument(metavar="FILE.py:PIPELINE", help="Python file and the pipeline in it.")],
    name: Annotated[str, typer.Option("--name", "-n", help="The snapshot's name (unique).")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="A YAML config file applied to the pipeline.")
    ] = None,
) -> None:
    """Store a runnable reference to a pipeline and its configuration."""
    from ._snapshots import create_snapshot

    pipe, attribute = _load_pipeline_and_name(target)
    if config is not None:
        pipe = pipe.with_options(config_path=str(config))
    snapshot = create_snapshot(pipe, name, attribute=attribute)
    print(f"snapshot {snapshot.name} ({snapshot.id}) of pipeline {snapshot.pipeline_name} from {snapshot.source}:{snapshot.attribute}")


@snapshots_app.command("list")
@_friendly_errors
def snapshots_list(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only snapshots of this pipeline.")] = None,
) -> None:
    """The stored snapshots, newest first."""
    from rich.table import Table

    from ._client import Client

    found = Client().list_snapshots(pipeline)
    if not found:
        print("no snapshots yet; create one with: unspool snapshots create FILE.py:PIPELINE --name NAME")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ID", "PIPELINE", "SOURCE", "PARAMETERS", "CREATED"):
        table.add_column(column, no_wrap=column != "SOURCE")
    for s in found:
        table.add_row(
            s.name, s.id, s.pipeline_name, f"{s.source}:{s.attribute}",
            json.dumps(s.parameters) if s.parameters else "-", _fmt_time(s.created),
        )
    _out().print(table)


@snapshots_app.command("trigger")
@_friendly_errors
def snapshots_trigger(
    snapshot: Annotated[str, typer.Argument(metavar="NAME_OR_ID", help="The snapshot to run.")],
    param: _ParamOption = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="A YAML run configuration laid over the snapshot's.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the run to finish.")] = True,
) -> None:
    """Run a snapshot in a separate process. Exit code 0: completed, 1: failed."""
    from rich.text import Text

    from ._client import Client
    from ._config_file import load_config_file

    run_configuration: dict[str, Any] = load_config_file(config).options() if config is not None else {}
    params = _parse_params(param or [])
    if params:
        run_configuration["parameters"] = {**run_configuration.get("parameters", {}), **params}
    run = Client().trigger_pipeline(snapshot, run_configuration=run_configuration, wait=wait)
    print(f"run {run.name} ({run.id}): {run.status.value}")
    if wait and not run.status.is_successful:
        message = (run.error or {}).get("message") or "see `unspool runs show`"
        _err().print(Text(f"run {run.name} failed: {_one_line(message)}", style="red"), soft_wrap=True)
        raise typer.Exit(1)


# -- artifacts -----------------------------------------------------------------------------------

@artifacts_app.command("list")
@_friendly_errors
def artifacts_list(
    name: Annotated[str | None, typer.Option("--name", "-n", help="List the versions of this artifact.")] = None,
) -> None:
    """List artifact names (versions, latest), or the versions of one artifact."""
    import datetime as dt

    from rich.table import Table

    from ._client import Client

    client = Client()
    out = _out()
    table = Table(box=None, header_style="bold", pad_edge=False)
    if name is None:
        rows = client.list_artifacts()
        if not rows:
            out.print("no artifacts yet", style="dim")
            return
        for column in ("name", "versions", "latest", "updated"):
            table.add_column(column, justify="right" if column in ("versions", "latest") else "left")
        for row in rows:
            updated = dt.datetime.fromtimestamp(row["updated"]) if row.get("updated") else None
            table.add_row(row["name"], str(row["versions"]), str(row["latest"]), _fmt_time(updated))
    else:
        versions = client.list_artifact_versions(name)
        if not versions:
            raise NotFoundError(f"no artifact named {name!r}; `unspool artifacts list` shows the known artifacts")
        for column in ("version", "id", "type", "size", "run", "created", "tags"):
            table.add_column(column, justify="right" if column in ("version", "size") else "left")
        for v in versions:
            table.add_row(str(v.version), v.id[:8], _short_type(v.data_type), _fmt_size(v.size),
                          (v.run_id or "-")[:8], _fmt_time(v.created), ", ".join(v.tags))
    out.print(table)


def _split_ref(ref: str) -> tuple[str, int | None]:
    name, sep, version = ref.rpartition(":")
    if sep and name and version.isdigit():
        return name, int(version)
    if sep and name and version == "latest":
        return name, None
    return ref, None


def _describe_step_run(client: Client, step: StepRun, run_names: dict[str, str]) -> str:
    if step.run_id not in run_names:
        try:
            run_names[step.run_id] = client.get_pipeline_run(step.run_id).name
        except NotFoundError:
            run_names[step.run_id] = step.run_id[:8]
    return f"{step.invocation_id} ({step.status.value}) in run {run_names[step.run_id]} [{step.run_id[:8]}]"


def _preview(version: ArtifactVersion) -> tuple[str, str]:
    """A truncated repr of the loaded value, or why it could not be loaded."""
    try:
        value = version.load()
    except Exception as exc:
        return f"could not load the value: {type(exc).__name__}: {_one_line(str(exc))}", "yellow"
    text = repr(value)
    if len(text) > _PREVIEW_CHARS:
        text = text[:_PREVIEW_CHARS] + f"… ({len(text)} characters)"
    return text, ""


@artifacts_app.command("show")
@_friendly_errors
def artifacts_show(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="Artifact name, optionally with a version.")],
    preview: Annotated[bool, typer.Option("--preview/--no-preview", help="Load the value and show its repr.")] = True,
) -> None:
    """Show one artifact version (the latest unless VERSION is given)."""
    from rich.table import Table
    from rich.text import Text

    from ._client import Client

    client = Client()
    name, version = _split_ref(ref)
    av = client.get_artifact_version(name, version)
    run_names: dict[str, str] = {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("artifact", Text(f"{av.name}:{av.version}"))
    grid.add_row("id", av.id)
    grid.add_row("uri", Text(av.uri))
    grid.add_row("type", Text(av.data_type))
    grid.add_row("materializer", Text(av.materializer))
    grid.add_row("hash", av.content_hash)
    grid.add_row("size", f"{_fmt_size(av.size)} ({av.size} bytes)")
    if av.item_count is not None:
        grid.add_row("items", str(av.item_count))
    grid.add_row("tags", Text(", ".join(av.tags) or "-"))
    grid.add_row("metadata", Text(_json(av.metadata) if av.metadata else "-"))
    grid.add_row("created", _fmt_time(av.created))
    producer = av.producer_step_run
    grid.add_row("producer", Text(_describe_step_run(client, producer, run_names) if producer else "-"))
    consumers = av.consumers
    grid.add_row("consumers", Text("\n".join(_describe_step_run(client, c, run_names) for c in consumers) or "-"))
    if preview:
        text, style = _preview(av)
        grid.add_row("value", Text(text, style=style))
    _out().print(grid)
