"""What runs recorded, as objects: runs, step runs, artifact versions and snapshots.

:class:`StoreReader` reads one location's stores through ``_queries`` and returns the
models below; it never writes, flushes or reaps. ``Client`` (``_client.py``) is a
``StoreReader`` plus the operations that start work (resume, trigger); the engine and the
pipeline futures use a plain ``StoreReader`` to hand back what they recorded. The models
are plain objects built from store rows; relations (a run's steps, a step's artifacts, an
artifact's producer and consumers) are fetched when first accessed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any

from . import _queries
from ._artifact_io import ArtifactRef, artifact_store_for, load_artifact
from ._errors import NotFoundError
from ._futures import ArtifactChunk
from ._metadata_store import MetadataStore
from ._stores import Stores, open_stores
from ._types import ExecutionStatus


def _ts(value: float | None) -> _dt.datetime | None:
    return None if value is None else _dt.datetime.fromtimestamp(value)


class ArtifactVersion:
    """One stored version of a named artifact. Passable to steps as an input."""

    _unspool_artifact_version = True

    def __init__(self, client: StoreReader, row: Any) -> None:
        self._client = client
        self.id: str = row["id"]
        self.name: str = row["name"]
        self.version: int = row["version"]
        self.uri: str = row["uri"]
        self.data_type: str = row["data_type"]
        self.materializer: str = row["materializer"]
        self.content_hash: str = row["content_hash"]
        self.size: int = row["size"]
        self.item_count: int | None = row["item_count"]
        self.producer_step_run_id: str | None = row["producer_step_run_id"]
        self.run_id: str | None = row["run_id"]
        self.tags: list[str] = list(row["tags"] or [])
        self.metadata: dict[str, Any] = dict(row["artifact_metadata"] or {})
        self.created: _dt.datetime | None = _ts(row["created_at"])
        self.artifact_store_url = client.artifact_root

    @property
    def producer_step_run(self) -> StepRun | None:
        if self.producer_step_run_id is None:
            return None
        return self._client.get_step_run(self.producer_step_run_id)

    @property
    def consumers(self) -> list[StepRun]:
        """Step runs that took this version as an input (cached ones included)."""
        return [self._client.get_step_run(i) for i in _queries.consumers_of(self._client.store, self.id)]

    def load(self) -> Any:
        return load_artifact(
            artifact_store_for(self.artifact_store_url),
            ArtifactRef(self.uri, self.materializer, self.data_type),
        )

    def chunk(self, index: int) -> Any:
        return ArtifactChunk(self, index)

    def __repr__(self) -> str:
        return f"<ArtifactVersion {self.name}:{self.version}>"


class StepRun:
    """One invocation of a step in a run, as stored."""

    def __init__(self, client: StoreReader, row: Any) -> None:
        self._client = client
        self.id: str = row["id"]
        self.run_id: str = row["run_id"]
        self.name: str = row["step_name"]
        self.invocation_id: str = row["invocation_id"]
        self.position: int = row["position"]
        self.status = ExecutionStatus(row["status"])
        self.parameters: dict[str, Any] = row["parameters"]
        self.config: dict[str, Any] = row["config"]
        self.upstream: list[str] = row["upstream"]
        self.cache_key: str | None = row["cache_key"]
        self.original_step_run_id: str | None = row["original_step_run_id"]
        self.error: dict[str, Any] | None = row["error"]
        self.attempts: list[dict[str, Any]] = row["attempts"]
        self.metadata: dict[str, Any] = row["step_metadata"]
        self.logs_uri: str | None = row["logs_uri"]
        self.start_time = _ts(row["start_time"])
        self.end_time = _ts(row["end_time"])
        self._io: tuple[dict[str, list[ArtifactVersion]], dict[str, list[ArtifactVersion]]] | None = None

    @property
    def duration(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()

    @property
    def runtime(self) -> str:
        return self.config.get("runtime", "inline")

    def _load_io(self) -> tuple[dict[str, list[ArtifactVersion]], dict[str, list[ArtifactVersion]]]:
        if self._io is None:
            self._io = self._client._io_for([self.id]).get(self.id, ({}, {}))
        return self._io

    @property
    def inputs(self) -> dict[str, list[ArtifactVersion]]:
        return self._load_io()[0]

    @property
    def outputs(self) -> dict[str, list[ArtifactVersion]]:
        return self._load_io()[1]

    @property
    def output(self) -> ArtifactVersion:
        outs = self.outputs
        if len(outs) != 1:
            raise ValueError(
                f"step run {self.invocation_id!r} has {len(outs)} outputs ({', '.join(outs) or 'none'}); "
                "use .outputs[name][0]"
            )
        return next(iter(outs.values()))[0]

    @property
    def logs(self) -> str:
        """The captured stdout, stderr and logging output (all attempts)."""
        if not self.logs_uri:
            return ""
        store = artifact_store_for(self._client.artifact_root)
        if not store.exists(self.logs_uri):
            return ""
        return store.read_bytes(self.logs_uri).decode(errors="replace")

    @property
    def original_step_run(self) -> StepRun | None:
        return None if self.original_step_run_id is None else self._client.get_step_run(self.original_step_run_id)

    def __repr__(self) -> str:
        return f"<StepRun {self.invocation_id} {self.status.value}>"


class PipelineRun:
    """One run of a pipeline, as stored."""

    def __init__(self, client: StoreReader, row: Any) -> None:
        self._client = client
        self.id: str = row["id"]
        self.name: str = row["name"]
        self.pipeline_name: str = row["pipeline_name"]
        self.status = ExecutionStatus(row["status"])
        self.dynamic: bool = row["dynamic"]
        self.parent_run_id: str | None = row["parent_run_id"]
        self.invocation_id: str | None = row["invocation_id"]
        self.parameters: dict[str, Any] = row["parameters"]
        self.config: dict[str, Any] = row["config"]
        self.dag: dict[str, Any] | None = row["dag"]
        self.error: dict[str, Any] | None = row["error"]
        self.metadata: dict[str, Any] = row["run_metadata"]
        self.orchestrator: str | None = row["orchestrator"]
        self.snapshot_id: str | None = row.get("snapshot_id")
        self.heartbeat = _ts(row["heartbeat"])
        self.start_time = _ts(row["start_time"])
        self.end_time = _ts(row["end_time"])
        self._steps: dict[str, StepRun] | None = None

    @property
    def steps(self) -> dict[str, StepRun]:
        """Step runs by invocation id, in invocation order."""
        if self._steps is None:
            self._steps = self._client._steps_of(self.id)
        return self._steps

    @property
    def failed_steps(self) -> list[str]:
        return [s.invocation_id for s in self.steps.values() if s.status == ExecutionStatus.FAILED]

    @property
    def child_runs(self) -> list[PipelineRun]:
        return self._client.list_pipeline_runs(parent_run_id=self.id)

    @property
    def duration(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()

    def __repr__(self) -> str:
        return f"<PipelineRun {self.name} {self.status.value}>"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A stored, runnable reference to a pipeline (see the module docstring)."""

    id: str
    name: str
    pipeline_name: str
    source: str
    attribute: str
    config: dict[str, Any]
    created: _dt.datetime
    source_file: str | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.config.get("parameters") or {})

    @classmethod
    def _from_row(cls, row: Any) -> Snapshot:
        return cls(
            id=row["id"], name=row["name"], pipeline_name=row["pipeline_name"],
            source=row["source"], attribute=row["attribute"], config=row["config"],
            created=_dt.datetime.fromtimestamp(row["created_at"]), source_file=row["source_file"],
        )

    def __repr__(self) -> str:
        return f"<Snapshot {self.name} ({self.pipeline_name} from {self.source}:{self.attribute})>"


class StoreReader:
    """Read access to one location's stores (the current one by default)."""

    def __init__(self, stores: Stores | None = None) -> None:
        stores = stores or open_stores()
        self.stores = stores
        self.store: MetadataStore = stores.metadata
        self.artifact_root: str = stores.artifact_root

    # -- runs -------------------------------------------------------------------------------------
    def get_pipeline_run(self, id_or_name: str) -> PipelineRun:
        """A run by id, name or unique id prefix (six characters or more)."""
        row = _queries.find_run(self.store, id_or_name)
        if row is None:
            raise NotFoundError(
                f"no pipeline run with id or name {id_or_name!r}; `unspool runs list` shows the known runs"
            )
        return PipelineRun(self, row)

    def list_pipeline_runs(
        self,
        pipeline_name: str | None = None,
        status: ExecutionStatus | str | None = None,
        *,
        parent_run_id: str | None = None,
        limit: int | None = None,
    ) -> list[PipelineRun]:
        """Runs, newest first."""
        rows = _queries.list_runs(
            self.store, pipeline_name=pipeline_name,
            status=None if status is None else ExecutionStatus(status).value,
            parent_run_id=parent_run_id, limit=limit,
        )
        return [PipelineRun(self, r) for r in rows]

    # -- steps ------------------------------------------------------------------------------------
    def get_step_run(self, step_run_id: str) -> StepRun:
        row = _queries.get_step_run(self.store, step_run_id)
        if row is None:
            raise NotFoundError(f"no step run with id {step_run_id!r}")
        return StepRun(self, row)

    def _steps_of(self, run_id: str) -> dict[str, StepRun]:
        rows = _queries.step_runs_of(self.store, run_id)
        steps = {r["invocation_id"]: StepRun(self, r) for r in rows}
        io = self._io_for([s.id for s in steps.values()]) if steps else {}
        for s in steps.values():
            s._io = io.get(s.id, ({}, {}))
        return steps

    def _io_for(self, step_run_ids: list[str]) -> dict[str, tuple[dict[str, list[ArtifactVersion]], dict[str, list[ArtifactVersion]]]]:
        out: dict[str, tuple[dict[str, list[ArtifactVersion]], dict[str, list[ArtifactVersion]]]] = {}
        links = _queries.step_run_io(self.store, step_run_ids)
        cache: dict[str, ArtifactVersion] = {}
        for link in links:
            av = cache.get(link["id"])
            if av is None:
                av = cache[link["id"]] = ArtifactVersion(self, link)
            inputs, outputs = out.setdefault(link["step_run_id"], ({}, {}))
            target = inputs if link["direction"] == "input" else outputs
            target.setdefault(link["io_name"], []).append(av)
        return out

    # -- artifacts -----------------------------------------------------------------------------------
    def get_artifact_version(self, name: str, version: int | str | None = None) -> ArtifactVersion:
        """A version of an artifact by name (the latest when ``version`` is None), or by id."""
        row = _queries.get_artifact_version(self.store, name, None if version is None else int(version))
        if row is None:
            which = f"version {version} of " if version is not None else ""
            raise NotFoundError(
                f"no {which}artifact named {name!r}; `unspool artifacts list` shows the known artifacts"
            )
        return ArtifactVersion(self, row)

    def list_artifact_versions(self, name: str | None = None, *, limit: int | None = None) -> list[ArtifactVersion]:
        """Artifact versions, newest first."""
        return [ArtifactVersion(self, r) for r in _queries.list_artifact_versions(self.store, name, limit)]

    def list_artifacts(self) -> list[dict[str, Any]]:
        """Artifact names with their number of versions and latest version."""
        return _queries.artifact_names(self.store)

    # -- snapshots (created and triggered through _snapshots.py) -------------------------------------
    def get_snapshot(self, name_or_id: str) -> Snapshot:
        """A snapshot by name, id or unique id prefix."""
        row = _queries.find_snapshot(self.store, name_or_id)
        if row is None:
            raise NotFoundError(
                f"no snapshot with id or name {name_or_id!r}; `unspool snapshots list` shows the known "
                "snapshots, `unspool snapshots create FILE.py:PIPELINE --name NAME` makes one"
            )
        return Snapshot._from_row(row)

    def list_snapshots(self, pipeline_name: str | None = None) -> list[Snapshot]:
        """Snapshots, newest first."""
        return [Snapshot._from_row(r) for r in _queries.list_snapshots(self.store, pipeline_name)]
