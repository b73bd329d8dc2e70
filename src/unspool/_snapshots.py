"""Snapshots: a stored, runnable reference to a pipeline, and triggering runs of it.

A snapshot records where the pipeline is defined (``source`` and ``attribute``, see
``_loading.py``) and its configuration as it was when the snapshot was made: everything
``with_options`` and a config file set, frozen (a config file is read once, when the
snapshot is created; ``config_path`` is kept as a record). Hooks and ``depends_on`` are
code, so they come from the pipeline's code when the snapshot runs. Snapshot names are
unique: creating a snapshot under a name that exists is an error (pick a new name).

Triggering (``Client().trigger_pipeline``) starts ``python -m unspool._trigger`` in a
separate process on the same stores. The caller first checks the run configuration (the
same schema as a config file) and its parameters against the signature recorded in the
snapshot; the new process loads the pipeline, lays the snapshot's configuration and then
the run configuration over it, and runs it. The two talk through a small *handshake* file:
the new process writes ``{"run_id": ...}`` as soon as the run exists, or ``{"error": ...}``
when it could not start one, which the caller raises as the same exception class. The run
records the snapshot it came from in ``pipeline_runs.snapshot_id``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _errors, _queries
from ._config import recorded_options
from ._config_file import (
    check_against_pipeline,
    merge_step_overrides,
    reapply_recorded,
    validate_config,
)
from ._errors import ConfigError, NotFoundError, UnspoolError
from ._loading import load_pipeline, locate
from ._models import PipelineRun, Snapshot, StoreReader
from ._settings import find_home

if TYPE_CHECKING:
    from ._pipeline import Pipeline

# -- creating and reading ------------------------------------------------------------------------

def create_snapshot(pipeline: Pipeline[Any], name: str, *, attribute: str | None = None) -> Snapshot:
    """Store ``pipeline`` under ``name``; it is found again where it is defined (``_loading``).

    ``attribute`` names the module-level name of the pipeline when it is not the one found.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip() or len(name) > 255:
        raise UnspoolError(f"a snapshot needs a non-empty name without surrounding spaces, got {name!r}")
    source, found_attribute, source_file = locate(pipeline)
    row = {
        "id": uuid.uuid4().hex,
        "name": name,
        "pipeline_name": pipeline.name,
        "source": source,
        "source_file": source_file,
        "attribute": attribute or found_attribute,
        "config": snapshot_config(pipeline),
        "created_at": time.time(),
    }
    reader = StoreReader()
    store = reader.store
    if _queries.find_snapshot(store, name) is None:
        store.add_pipeline(pipeline.name)
        store.insert_snapshot(row)
        store.flush()  # the writer drops (and reports) a row the database refuses: a name taken meanwhile
    try:
        return reader.get_snapshot(row["id"])
    except NotFoundError:
        existing = reader.get_snapshot(name)
        raise UnspoolError(
            f"a snapshot named {name!r} already exists (id {existing.id}, pipeline "
            f"{existing.pipeline_name!r}, created {existing.created:%Y-%m-%d %H:%M:%S}); snapshot "
            "names are unique, pick another name"
        ) from None


def snapshot_config(pipeline: Pipeline[Any]) -> dict[str, Any]:
    """The pipeline's configuration as JSON: what a run records, plus what re-applies it."""
    c = pipeline.config
    try:
        options = recorded_options(c, strict=True)
    except UnspoolError as exc:
        raise UnspoolError(f"cannot snapshot pipeline {pipeline.name!r}: {exc}") from None
    return {"dynamic": c.dynamic, **options, "config_path": c.config_path, "signature": _signature_info(pipeline)}


def _signature_info(pipeline: Pipeline[Any]) -> dict[str, Any]:
    params = pipeline.signature.parameters.values()
    return {
        "parameters": [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)],
        "required": [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)],
        "var_keyword": any(p.kind is p.VAR_KEYWORD for p in params),
    }


# -- the pipeline a snapshot runs ------------------------------------------------------------------

def check_run_configuration(snapshot: Snapshot, run_configuration: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a run configuration against the schema and the snapshot's recorded signature.

    Returns the options it sets. Problems are one :class:`ConfigError` whose key paths start
    with ``run_configuration.``.
    """
    try:
        options = validate_config(run_configuration).options()
    except ConfigError as exc:
        raise _as_run_configuration_error(exc) from None
    signature = snapshot.config.get("signature") or {}
    known = signature.get("parameters", [])
    problems = []
    if not signature.get("var_keyword", False):
        for name in options.get("parameters", {}):
            if name not in known:
                problems.append(
                    (f"run_configuration.parameters.{name}", f"pipeline {snapshot.pipeline_name!r} "
                     f"of snapshot {snapshot.name!r} has no parameter {name!r}; expected one of: "
                     f"{', '.join(known) or '(it takes none)'}")
                )
    given = {**snapshot.parameters, **options.get("parameters", {})}
    missing = [n for n in signature.get("required", []) if n not in given]
    if missing:
        problems.append(
            ("run_configuration.parameters", f"pipeline {snapshot.pipeline_name!r} of snapshot "
             f"{snapshot.name!r} needs parameter(s) {missing}; expected them under parameters")
        )
    if problems:
        raise ConfigError(problems)
    return options


def _as_run_configuration_error(exc: ConfigError) -> ConfigError:
    return ConfigError(
        [(f"run_configuration.{key}" if key else "run_configuration", what) for key, what in exc.problems]
    )


def snapshot_pipeline(snapshot: Snapshot, run_configuration: dict[str, Any] | None = None) -> Pipeline[Any]:
    """Load the snapshot's pipeline with its stored configuration and the run configuration."""
    base = load_pipeline(snapshot.source, snapshot.attribute, snapshot.source_file)
    pipeline = reapply_recorded(base, snapshot.config, what=f"snapshot {snapshot.name!r}", name=snapshot.pipeline_name)
    options = check_run_configuration(snapshot, run_configuration)
    try:
        check_against_pipeline(
            options, pipeline=pipeline, dynamic=pipeline.config.dynamic,
            depends_on=pipeline.config.depends_on, file=None,
        )
    except ConfigError as exc:
        raise _as_run_configuration_error(exc) from None
    if "steps" in options:
        options["steps"] = merge_step_overrides(pipeline.config.steps, options["steps"])
    return pipeline.with_options(**options) if options else pipeline


# -- triggering --------------------------------------------------------------------------------------

_background: list[subprocess.Popen[bytes]] = []  # runs started with wait=False, reaped later


def trigger(
    client: StoreReader,
    snapshot_name_or_id: str,
    run_configuration: dict[str, Any] | None = None,
    *,
    wait: bool = True,
) -> PipelineRun:
    """Run a snapshot in a new process; see ``Client.trigger_pipeline``."""
    _background[:] = [p for p in _background if p.poll() is None]
    snapshot = client.get_snapshot(snapshot_name_or_id)
    check_run_configuration(snapshot, run_configuration)
    folder = find_home() / "triggers"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, handshake = tempfile.mkstemp(prefix=f"{snapshot.id[:8]}-", suffix=".json", dir=folder)
    os.close(fd)
    os.unlink(handshake)  # the new process creates it when it has something to say
    # The run configuration (parameters may be secrets) goes through a file only its owner
    # can read (mkstemp: mode 0600), never the command line, which every user can read.
    fd, config_file = tempfile.mkstemp(prefix=f"{snapshot.id[:8]}-", suffix=".config.json", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(run_configuration or {}, f)
    env = dict(
        os.environ,
        UNSPOOL_HOME=str(find_home()),
        UNSPOOL_STORE_URL=client.store.url,
        UNSPOOL_ARTIFACT_STORE=client.artifact_root,
    )
    command = [sys.executable, "-m", "unspool._trigger", snapshot.id, config_file, handshake]
    log_path: Path | None = None
    try:
        if wait:
            proc = subprocess.Popen(command, env=env)
        else:
            log_path = Path(handshake).with_suffix(".log")
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        message = None
        while message is None:
            message = _read_handshake(handshake)
            if message is None and proc.poll() is not None:
                message = _read_handshake(handshake) or {
                    "error": {"type": "UnspoolError", "message": _no_start_message(snapshot, proc, log_path)}
                }
            if message is None:
                time.sleep(0.02)
    finally:
        Path(config_file).unlink(missing_ok=True)  # the new process deletes it once read
    Path(handshake).unlink(missing_ok=True)  # the new process writes it once
    if "error" in message:
        proc.wait()
        raise _error_from_json(message["error"])
    run_id = message["run_id"]
    if wait:
        proc.wait()
    else:
        _background.append(proc)
        while True:  # until the run row is committed (the new process flushes within ~0.2s)
            try:
                return client.get_pipeline_run(run_id)
            except NotFoundError:
                if proc.poll() is not None:
                    break
                time.sleep(0.02)
    return client.get_pipeline_run(run_id)


def _read_handshake(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _no_start_message(snapshot: Snapshot, proc: subprocess.Popen[bytes], log: Path | None) -> str:
    where = f"; its output is in {log}" if log else "; its output is above"
    return (
        f"the process running snapshot {snapshot.name!r} exited with code {proc.returncode} "
        f"before starting a run{where}"
    )


def write_handshake(path: str | None, message: dict[str, Any]) -> None:
    """Atomically write the message the caller of ``trigger`` waits for."""
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(message, f)
    os.replace(tmp, path)


def error_to_json(exc: BaseException) -> dict[str, Any]:
    data: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ConfigError):
        data.update(problems=exc.problems, file=exc.file)
    return data


def _error_from_json(data: dict[str, Any]) -> UnspoolError:
    kind, message = data.get("type", ""), data.get("message", "")
    if kind == "ConfigError":
        return ConfigError([tuple(p) for p in data.get("problems") or [("", message)]], file=data.get("file"))
    cls = getattr(_errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, UnspoolError):
        try:
            return cls(message)
        except TypeError:  # an error class that needs more than a message
            pass
    return UnspoolError(f"{kind}: {message}" if kind and kind != "UnspoolError" else message)
