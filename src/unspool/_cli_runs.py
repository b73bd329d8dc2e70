"""``unspool runs ...``: list, show, resume and draw the DAG of pipeline runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._types import ExecutionStatus

if TYPE_CHECKING:

    from ._client import Client, PipelineRun, StepRun

from ._cli_output import (
    _MERMAID_STYLE,
    CliError,
    DagFormat,
    _client,
    _execute,
    _fmt_duration,
    _fmt_time,
    _friendly_errors,
    _json,
    _one_line,
    _out,
    _run_duration,
    _status,
    _step_count,
)

runs_app = typer.Typer(help="Inspect pipeline runs.", no_args_is_help=True)


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

    runs = _client().list_pipeline_runs(pipeline_name=pipeline, status=status, limit=limit)
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
    if not used and not limits and not (run.metadata or {}).get("spend"):
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
    spent: dict[str, Any] = (run.metadata or {}).get("spend") or {}
    spend_limits: dict[str, Any] = limits.get("spend") or {}
    for key in {**spend_limits, **spent}:
        limit = spend_limits.get(key)
        parts.append(f"{key} {_amount(spent.get(key, 0))}" + ("" if limit is None else f"/{_amount(limit)}"))
    for key, value in used.items():
        if key not in ("steps", "duration_s", "max_parallelism", "spend"):
            parts.append(f"{key} {value}")
    return ", ".join(parts) or None


def _amount(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _cached_origins(client: Client, steps: list[StepRun]) -> dict[str, str]:
    """``step run id -> "run name / invocation"`` of the originals of cached steps, in one query."""
    from ._queries import step_run_origins  # lazy: keeps `unspool --help` quick

    wanted = sorted({s.original_step_run_id for s in steps if s.original_step_run_id})
    rows = step_run_origins(client.store, wanted)
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
        int, typer.Option("--limit", "-n", min=0, help="Show this many steps per page (0: all of them).")
    ] = 50,
    page: Annotated[
        int, typer.Option("--page", "-p", min=1, help="Which page of --limit steps to show (from 1).")
    ] = 1,
) -> None:
    """Show one run: its header, a page of its steps and its child runs.

    Steps are counted and paged by the store, so a run of any size answers at once."""
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

    client = _client()
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
    extra = {k: v for k, v in (run.metadata or {}).items() if k not in ("step_counts", "budget_used", "spend")}
    if extra:
        header.add_row("metadata", Text(_json(extra)))
    out.print(header)

    counts = run.status_counts()
    total = sum(counts.values())
    out.print()
    if not total:
        out.print("no steps recorded", style="dim")
    else:
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda c: -c[1]))
        first = (page - 1) * limit
        shown = run.list_steps(offset=first, limit=limit or None)
        title = f"{total} steps ({summary})"
        if limit and (first or len(shown) < total):
            title += f", steps {first + 1}-{first + len(shown)}" if shown else f", page {page} is past the last"
        table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
        for column in ("invocation", "step", "status", "duration", "cached", "runtime", "attempts"):
            table.add_column(column, justify="right" if column in ("duration", "attempts") else "left")
        origins = _cached_origins(client, shown)
        for s in shown:
            attempts = str(len(s.attempts)) if s.attempts else "-"
            table.add_row(Text(s.invocation_id), Text(s.name), _status(s.status), _fmt_duration(s.duration),
                          Text(_cached_cell(s, origins)), s.runtime, attempts)
        out.print(table)
        if first + len(shown) < total:
            out.print(f"… {total - first - len(shown)} more steps (--page {page + 1} shows the next "
                      f"{limit}; --limit 0 shows all)", style="dim", markup=False)
        n_failed = counts.get(ExecutionStatus.FAILED.value, 0)
        failed = run.list_steps(status=ExecutionStatus.FAILED, limit=20) if n_failed else []
        for s in failed:
            err = s.error or {}
            out.print(Text(f"✗ {s.invocation_id}: {err.get('type', 'Error')}: {_one_line(err.get('message', ''))}",
                           style="red"))
        if n_failed > 20:
            out.print(f"… and {n_failed - 20} more failed steps", style="red", markup=False)
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
    """Run a failed or stopped run again as the same run, reusing the steps that completed.

    A completed run is left as it is (one line says so, exit 0). Another live orchestrator
    owning the run is an error: one line names it, nothing is written.
    """
    client = _client()
    resume = getattr(client, "resume_pipeline_run", None)
    if resume is None:
        raise CliError("this version of unspool cannot resume runs")
    run = client.get_pipeline_run(run_ref)  # resolves id prefixes too
    if run.status == ExecutionStatus.COMPLETED:
        _out().print(f"run {run.name!r} ({run.id}) already completed; nothing to resume, nothing changed",
                     markup=False, highlight=False)
        return
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
    run = _client().get_pipeline_run(run_ref)
    nodes, edges = _dag_of(run)
    statuses = {inv: s.status.value for inv, s in run.steps.items()}
    parts = []
    if fmt in (None, DagFormat.text):
        parts.append(_dag_text(nodes, edges))
    if fmt in (None, DagFormat.mermaid):
        parts.append(_dag_mermaid(nodes, edges, statuses))
    typer.echo("\n\n".join(p for p in parts if p) or "(no steps)")
