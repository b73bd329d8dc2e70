"""``unspool snapshots``: store runnable references to pipelines and trigger runs of them.

``create FILE.py:PIPELINE --name N [--config C]``  store the pipeline (configured from C)
``list``                                          the stored snapshots, newest first
``trigger NAME_OR_ID [--param k=v ...]``          run one in a separate process; exit 0 when
                                                  the run completed, 1 when it failed

The app is mounted by ``_cli.py``; errors follow its policy (one red line, exit code 2).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar

import typer

from ._errors import UnspoolError

F = TypeVar("F", bound=Callable[..., Any])

snapshots_app = typer.Typer(
    help="Store runnable references to pipelines (snapshots) and trigger runs of them.",
    no_args_is_help=True,
)


def _errors_as_one_line(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except Exception as exc:
            try:
                from ._cli import _state

                debug = _state.debug
            except ImportError:  # pragma: no cover - mounted elsewhere
                debug = False
            if debug:
                raise
            message = str(exc) if isinstance(exc, UnspoolError) else f"{type(exc).__name__}: {exc}"
            _stderr(f"error: {' '.join(message.split())}", style="red")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _stderr(text: str, style: str = "") -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, highlight=False).print(Text(text, style=style), soft_wrap=True)


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UnspoolError(f"--param expects KEY=VALUE with KEY a parameter name, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def _load_target(target: str) -> tuple[Any, str]:
    """The pipeline ``FILE.py:PIPELINE`` names, and its attribute name."""
    from ._loading import load_file
    from ._pipeline import Pipeline

    file_part, sep, attr = target.rpartition(":")
    if not sep or "/" in attr or "\\" in attr:
        file_part, attr = target, ""
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise UnspoolError(f"file {file_part!r} not found; expected FILE.py:PIPELINE, e.g. flows/train.py:training")
    module = load_file(path)
    found = sorted(n for n, v in vars(module).items() if isinstance(v, Pipeline))
    if not attr:
        if len(found) != 1:
            raise UnspoolError(
                f"name the pipeline as {file_part}:PIPELINE (pipelines in the file: {', '.join(found) or 'none'})"
            )
        attr = found[0]
    pipe = getattr(module, attr, None)
    if not isinstance(pipe, Pipeline):
        raise UnspoolError(
            f"{file_part}:{attr} is not an unspool pipeline; pipelines in the file: {', '.join(found) or 'none'}"
        )
    return pipe, attr


@snapshots_app.command("create")
@_errors_as_one_line
def create(
    target: Annotated[str, typer.Argument(metavar="FILE.py:PIPELINE", help="Python file and the pipeline in it.")],
    name: Annotated[str, typer.Option("--name", "-n", help="The snapshot's name (unique).")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="A YAML config file applied to the pipeline.")
    ] = None,
) -> None:
    """Store a runnable reference to a pipeline and its configuration."""
    from ._snapshots import create_snapshot

    pipe, attribute = _load_target(target)
    if config is not None:
        pipe = pipe.with_options(config_path=str(config))
    snapshot = create_snapshot(pipe, name, attribute=attribute)
    print(f"snapshot {snapshot.name} ({snapshot.id}) of pipeline {snapshot.pipeline_name} from {snapshot.source}:{snapshot.attribute}")


@snapshots_app.command("list")
@_errors_as_one_line
def list_(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only snapshots of this pipeline.")] = None,
) -> None:
    """The stored snapshots, newest first."""
    from rich.console import Console
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
            json.dumps(s.parameters) if s.parameters else "-", s.created.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(highlight=False, width=240)
    console.print(table)


@snapshots_app.command("trigger")
@_errors_as_one_line
def trigger(
    snapshot: Annotated[str, typer.Argument(metavar="NAME_OR_ID", help="The snapshot to run.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", metavar="KEY=VALUE",
            help="A pipeline parameter (repeatable); VALUE is parsed as JSON when it parses, else a string.",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="A YAML run configuration laid over the snapshot's.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the run to finish.")] = True,
) -> None:
    """Run a snapshot in a separate process. Exit code 0: completed, 1: failed."""
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
        _stderr(f"run {run.name} failed: {' '.join(str(message).split())}", style="red")
        raise typer.Exit(1)
