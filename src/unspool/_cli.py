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
imported inside the commands so ``unspool --help`` stays quick. The ``runs`` group lives in
``_cli_runs.py``; output helpers shared by the groups in ``_cli_output.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import __version__
from ._cli_output import (
    CliError,
    _client,
    _err,
    _execute,
    _fmt_size,
    _fmt_time,
    _friendly_errors,
    _json,
    _one_line,
    _out,
    _short_type,
    _state,
)
from ._cli_runs import runs_app
from ._errors import NotFoundError

if TYPE_CHECKING:

    from ._client import ArtifactVersion, Client, StepRun
    from ._pipeline import Pipeline

_PREVIEW_CHARS = 400

# ``--param k=v`` of ``run`` and ``snapshots trigger`` (parsed by ``_parse_params``).
_ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param", "-p", metavar="KEY=VALUE",
        help="A pipeline parameter (repeatable); VALUE is parsed as JSON when it parses, else a string.",
    ),
]


app = typer.Typer(
    name="unspool",
    help="Run tracked pipelines and inspect their runs, steps, logs and artifacts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
artifacts_app = typer.Typer(help="Inspect artifacts and their versions.", no_args_is_help=True)
snapshots_app = typer.Typer(
    help="Store runnable references to pipelines (snapshots) and trigger runs of them.",
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")  # defined in _cli_runs.py
app.add_typer(artifacts_app, name="artifacts")
app.add_typer(snapshots_app, name="snapshots")


def main() -> None:
    """Entry point of the ``unspool`` script and of ``python -m unspool``."""
    app(prog_name="unspool")


# -- init ----------------------------------------------------------------------------------------

def _print_version(value: bool) -> None:
    if value:
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
    from ._metadata_store import redact
    from ._settings import find_home, resolve_location  # lazy: keeps `unspool --help` quick
    from ._stores import open_stores

    existed = find_home(create=False).is_dir()
    location = resolve_location()
    stores = open_stores()  # opens (and migrates) the metadata store
    stores.artifacts.fs.makedirs(stores.artifacts.root, exist_ok=True)
    out = _out()
    verb = "found existing" if existed else "created"
    out.print(f"{verb} unspool home at {location.home}", markup=False)
    out.print(f"  metadata store: {redact(location.store_url)}", markup=False)
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
    from ._loading import load_file  # lazy: keeps `unspool --help` quick

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

    from ._pipeline import Pipeline  # lazy: keeps `unspool --help` quick
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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Outside a terminal, print a line for every finished step.")
    ] = False,
) -> None:
    """Run a pipeline defined in a Python file. Exit code 0: completed, 1: failed."""
    if verbose and os.environ.get("UNSPOOL_PROGRESS", "auto").lower() not in ("off", "0", "false", "no"):
        os.environ["UNSPOOL_PROGRESS"] = "steps"
    params = _parse_params(param or [])
    pipe = _load_pipeline(target)
    if config is not None:
        if not config.is_file():
            raise CliError(f"config file {str(config)!r} not found")
        pipe = pipe.with_options(config_path=str(config.resolve()))
    _execute(lambda: pipe(**params))


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
    run = _client().get_pipeline_run(run_ref)
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
    from ._snapshots import create_snapshot  # lazy: keeps `unspool --help` quick

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

    found = _client().list_snapshots(pipeline)
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

    from ._config_file import load_config_file  # lazy: keeps `unspool --help` quick

    run_configuration: dict[str, Any] = load_config_file(config).options() if config is not None else {}
    params = _parse_params(param or [])
    if params:
        run_configuration["parameters"] = {**run_configuration.get("parameters", {}), **params}
    run = _client().trigger_pipeline(snapshot, run_configuration=run_configuration, wait=wait)
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

    client = _client()
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


@artifacts_app.command("verify")
@_friendly_errors
def artifacts_verify(
    ref: Annotated[str | None, typer.Argument(
        metavar="[NAME[:VERSION]]", help="Check only this artifact (all its versions, or one).")] = None,
) -> None:
    """Re-hash artifact versions and compare them with their recorded content hash and size.

    Prints one line per damaged version; exits with 1 when any is damaged."""
    client = _client()
    if ref is None:
        versions = client.list_artifact_versions()
    else:
        name, version = _split_ref(ref)
        versions = [client.get_artifact_version(name, version)] if version is not None else (
            client.list_artifact_versions(name))
        if not versions:
            raise NotFoundError(f"no artifact named {name!r}; `unspool artifacts list` shows the known artifacts")
    damaged = 0
    for av in versions:
        problem = av.verify()
        if problem is not None:
            damaged += 1
            print(f"damaged: {av.name}:{av.version} at {av.uri}: {problem}")
    print(f"{len(versions)} artifact versions checked, {damaged} damaged")
    if damaged:
        raise typer.Exit(1)


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


_DATA_FORMATS = ("none", "json", "bytes", "npy")  # formats whose loading runs no stored code


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
    load: Annotated[bool, typer.Option(
        "--load", help="Also load a pickled value (or one with a materializer unspool does not know) to "
        "show it: unpickling runs code from whoever could write the artifact store.")] = False,
) -> None:
    """Show one artifact version (the latest unless VERSION is given).

    The value is previewed only when it is stored as data (JSON, bytes, npy); pickled values
    are loaded only with --load."""
    from rich.table import Table
    from rich.text import Text

    client = _client()
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
    stored = av.stored_format
    grid.add_row("format", Text(
        f"{stored} (loading it runs code from whoever could write the artifact store)" if stored == "pickle"
        else stored or "unknown (a materializer unspool does not know)"
    ))
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
    if preview and (load or stored in _DATA_FORMATS):
        text, style = _preview(av)
        grid.add_row("value", Text(text, style=style))
    elif preview:
        grid.add_row("value", Text(f"not loaded: it is stored as {stored or 'an unknown format'}; "
                                   "pass --load to load it", style="yellow"))
    _out().print(grid)
