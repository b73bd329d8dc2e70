"""ZenML APIs with a local meaning: ``Model``, ``get_pipeline_context()``, and artifacts made
outside steps (``save_artifact``, ``load_artifact``, ``register_artifact``).

Options that cannot mean anything on one machine are accepted and recorded, never rejected:
``@pipeline(model=Model(...))`` records the model's fields in the run's configuration (there
is no model control plane), ``environment=`` is set in this process while the run executes
(isolated workers inherit it; Ray tasks do not), ``enable_step_logs=`` is recorded (logs are always captured), ``tags=`` and
``extra=`` are recorded and readable (``PipelineRun.tags``, ``get_pipeline_context().extra``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from ._context import INFERRED, current_step
from ._errors import NotFoundError, PipelineError, StepInputError


@dataclass
class Model:
    """A ZenML model reference, recorded on the runs that name it."""

    name: str
    version: str | int | None = None
    description: str | None = None
    tags: list[str] | None = None
    license: str | None = None
    audience: str | None = None
    use_cases: str | None = None
    limitations: str | None = None
    trade_offs: str | None = None
    ethics: str | None = None
    save_models_to_registry: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def recorded(self) -> dict[str, Any]:
        from ._step import _jsonable

        return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class PipelineContext:
    """What a pipeline body can know about its run (``get_pipeline_context()``)."""

    name: str
    run_name: str
    run_id: str
    parameters: dict[str, Any]
    extra: dict[str, Any]
    model: Any
    tags: list[str]
    enable_cache: bool


def get_pipeline_context() -> PipelineContext:
    """The context of the pipeline body running in this thread; an error elsewhere."""
    from ._context import current_run

    run = current_run()
    if run is None:
        raise PipelineError("get_pipeline_context() can only be called inside a running pipeline body")
    config = run.config
    return PipelineContext(
        name=config.name, run_name=run.name, run_id=run.id, parameters=dict(run.parameters),
        extra=dict(getattr(config, "extra", {}) or {}), model=getattr(config, "model", None),
        tags=list(getattr(config, "tags", ()) or ()), enable_cache=config.enable_cache,
    )


# -- artifacts made outside steps --------------------------------------------------------------------------

def _store_version(name: str, uri: str, materializer: str, data_type: str, content_hash: str, size: int,
                   item_count: int | None, tags: list[str] | None, metadata: dict[str, Any] | None) -> Any:
    from ._client import Client
    from ._ids import new_id
    from ._stores import open_stores
    from ._types import Produced

    if not name or "{" in name:
        raise StepInputError(f"artifact name {name!r} must be a non-empty name without {{placeholders}}")
    env = open_stores()
    produced = Produced(id=new_id(), name=name, uri=uri, materializer=materializer, data_type=data_type,
                        content_hash=content_hash, size=size, item_count=item_count, producer_step_run_id=None)
    env.metadata.insert_artifact_version(
        {
            "id": produced.id, "name": name, "uri": uri, "data_type": data_type, "materializer": materializer,
            "content_hash": content_hash, "size": size, "item_count": item_count, "producer_step_run_id": None,
            "run_id": None, "tags": list(tags or ()), "artifact_metadata": dict(metadata or {}),
            "created_at": time.time(),
        },
        produced,
    )
    env.metadata.flush()
    return Client().get_artifact_version(produced.id)


def save_artifact(data: Any, name: str, version: Any = None, tags: list[str] | None = None,
                  materializer: Any = None, uri: str | None = None, artifact_metadata: dict[str, Any] | None = None,
                  **_ignored: Any) -> Any:
    """Store ``data`` as a new version of artifact ``name`` (outside any step); returns it.

    Versions are numbered by unspool (``version`` is accepted and ignored, as are ZenML's
    other options); ``materializer`` chooses how it is written.
    """
    from ._ids import new_id
    from ._materializers import materializer_from_path, materializer_registry
    from ._runner import save_artifact as write
    from ._stores import open_stores

    env = open_stores()
    if isinstance(materializer, str):
        materializer = materializer_from_path(materializer)
    cls = materializer or materializer_registry.for_type(type(data))
    target = uri or env.artifacts.join("external", f"{name}-{new_id()[-12:]}")
    record = write(env.artifacts, target, data, cls)
    return _store_version(name, record.uri, record.materializer, record.data_type, record.content_hash,
                          record.size, record.item_count, tags, {**record.metadata, **(artifact_metadata or {})})


def load_artifact(name_or_id: str, version: int | str | None = None) -> Any:
    """The data of a version of an artifact (the latest by default)."""
    from ._client import Client

    return Client().get_artifact_version(name_or_id, version).load()


def register_artifact(folder_or_file_uri: str, name: str, version: Any = None, tags: list[str] | None = None,
                      artifact_metadata: dict[str, Any] | None = None, **_ignored: Any) -> Any:
    """Record an existing file or folder as a version of artifact ``name`` without copying it;
    loading it gives its path."""
    import hashlib
    import os

    path = os.path.abspath(os.path.expanduser(folder_or_file_uri)) if "://" not in folder_or_file_uri \
        else folder_or_file_uri
    if "://" not in path and not os.path.exists(path):
        raise NotFoundError(f"cannot register {path} as artifact {name!r}: it does not exist")
    digest, size = hashlib.sha256(path.encode()), 0
    if os.path.isdir(path):
        for root, _, files in sorted(os.walk(path)):
            for f in sorted(files):
                full = os.path.join(root, f)
                digest.update(os.path.relpath(full, path).encode())
                with open(full, "rb") as fh:
                    content = fh.read()
                digest.update(content)
                size += len(content)
    elif os.path.isfile(path):
        with open(path, "rb") as fh:
            content = fh.read()
        digest.update(content)
        size = len(content)
    from ._materializers import PathMaterializer, materializer_path

    return _store_version(name, path, materializer_path(PathMaterializer), "pathlib:Path", digest.hexdigest(),
                          size, None, tags, artifact_metadata)


def log_metadata(
    metadata: dict[str, Any],
    *,
    artifact_name: str | None = None,
    infer_artifact: bool = False,
    step_name: str | None = None,
    run_id_name_or_prefix: str | None = None,
    step_id: str | None = None,
    artifact_version_id: str | None = None,
    artifact_version: str | int | None = None,
    **model_options: Any,
) -> None:
    """Attach metadata, as in ZenML.

    Inside a step: to the step run, to one of its outputs (``artifact_name``), or to its only
    output (``infer_artifact=True``). Anywhere: to a stored step run (``step_name`` with
    ``run_id_name_or_prefix``, or ``step_id``), an artifact version (``artifact_version_id``,
    or ``artifact_name`` with ``artifact_version``) or a run (``run_id_name_or_prefix``).
    Model options (``model_name``, ``infer_model``...) are accepted; unspool has no model
    store, so that metadata goes to the step run when called in a step.
    """
    ctx = current_step()
    elsewhere = any(v is not None for v in (step_name, run_id_name_or_prefix, step_id, artifact_version_id,
                                            artifact_version))
    if ctx is not None and not elsewhere:
        if artifact_name is not None:
            ctx.artifact_metadata.setdefault(artifact_name, {}).update(metadata)
        elif infer_artifact:
            ctx.artifact_metadata.setdefault(INFERRED, {}).update(metadata)
        else:
            ctx.step_metadata.update(metadata)
        return
    log_metadata_stored(metadata, step_name=step_name, run=run_id_name_or_prefix, step_id=step_id,
                        artifact_version_id=artifact_version_id, artifact_name=artifact_name,
                        artifact_version=artifact_version, in_step=ctx is not None)


def log_metadata_stored(metadata: dict[str, Any], *, step_name: str | None, run: str | None, step_id: str | None,
                        artifact_version_id: str | None, artifact_name: str | None,
                        artifact_version: str | int | None, in_step: bool) -> None:
    """``log_metadata`` aimed at something already stored (see ``_runner.log_metadata``): the
    store's writer merges it into what is stored, so concurrent callers do not lose keys."""
    from ._client import Client
    from ._errors import UnspoolError
    from ._store_writes import merge_metadata
    from ._stores import open_stores

    client = Client()
    store = open_stores().metadata
    if step_id is not None or step_name is not None:
        if step_id is not None:
            step_run = client.get_step_run(step_id)
        else:
            if run is None:
                if not in_step:
                    raise UnspoolError(
                        f"log_metadata(step_name={step_name!r}) outside a step also needs "
                        "run_id_name_or_prefix= (the run the step belongs to)"
                    )
                from ._context import get_step_context

                run = get_step_context().run_id
            steps = client.get_pipeline_run(run).steps
            step_run = steps.get(step_name) or next(
                (s for s in steps.values() if s.name == step_name), None)  # type: ignore[arg-type]
            if step_run is None:
                raise NotFoundError(f"run {run!r} has no step {step_name!r}; its steps are {sorted(steps)}")
        merge_metadata(store, "step_run", step_run.id, metadata)
    elif artifact_version_id is not None or artifact_name is not None:
        version = client.get_artifact_version(artifact_version_id or artifact_name or "",
                                              None if artifact_version_id else artifact_version)
        merge_metadata(store, "artifact_version", version.id, metadata)
    elif run is not None:
        merge_metadata(store, "run", client.get_pipeline_run(run).id, metadata)
    else:
        raise UnspoolError(
            "log_metadata() outside a step needs a target: step_name= with run_id_name_or_prefix=, "
            "step_id=, artifact_version_id=, artifact_name= with artifact_version=, or run_id_name_or_prefix="
        )


@contextlib.contextmanager
def run_environment(environment: dict[str, Any] | None) -> Iterator[None]:
    """``@pipeline(environment={...})``: the variables are set while the run executes."""
    if not environment:
        yield
        return
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update({str(k): str(v) for k, v in environment.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
