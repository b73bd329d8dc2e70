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
from ._artifact_store import SaveTracker, directory_digest
from ._errors import NotFoundError
from ._futures import ArtifactChunk
from ._materializers import stored_format
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

    @property
    def stored_format(self) -> str | None:
        """How the value is stored: "json", "bytes", "npy", "none" or "pickle" (loading a pickle
        runs code from whoever could write the store); None for a materializer of your own."""
        return stored_format(self.materializer)

    def load(self) -> Any:
        return load_artifact(
            artifact_store_for(self.artifact_store_url),
            ArtifactRef(self.uri, self.materializer, self.data_type, None, self.size, f"{self.name}:{self.version}"),
        )

    def verify(self) -> str | None:
        """What is wrong with this version's files (gone, or size or content hash not as
        recorded), or None when they hash to the recorded content hash. Reads every byte."""
        store = artifact_store_for(self.artifact_store_url)
        problem = store.damage(self.uri, self.size)
        if problem is None:
            content_hash, _ = directory_digest(store, self.uri, SaveTracker())
            if content_hash != self.content_hash:
                problem = f"its content hashes to {content_hash} but {self.content_hash} was recorded"
        return problem

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

    def list_steps(self, *, status: ExecutionStatus | str | None = None, offset: int = 0,
                   limit: int | None = None) -> list[StepRun]:
        """Step runs in invocation order, ``offset``/``limit`` and ``status`` applied by the
        store: a page of a big run without reading all of it (``steps`` reads every one)."""
        return self._client._steps_page(
            self.id, None if status is None else ExecutionStatus(status).value, offset, limit)

    def status_counts(self) -> dict[str, int]:
        """How many step runs are in each status, counted by the store."""
        if self._steps is not None:
            counts: dict[str, int] = {}
            for s in self._steps.values():
                counts[s.status.value] = counts.get(s.status.value, 0) + 1
            return counts
        return _queries.step_status_counts(self._client.store, self.id)

    @property
    def tags(self) -> list[str]:
        return list((self.config or {}).get("tags") or [])

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


class Pipeline:
    """A pipeline as the store knows it: its name and its runs."""

    def __init__(self, client: StoreReader, row: Any) -> None:
        self._client = client
        self.name: str = row["name"]
        self.created = _ts(row["created_at"])

    @property
    def runs(self) -> list[PipelineRun]:
        return self._client.list_pipeline_runs(pipeline_name=self.name)

    @property
    def last_run(self) -> PipelineRun:
        runs = self._client.list_pipeline_runs(pipeline_name=self.name, limit=1)
        if not runs:
            raise NotFoundError(f"pipeline {self.name!r} has no runs")
        return runs[0]

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}>"


class Artifact:
    """An artifact by name: all its versions, oldest first."""

    def __init__(self, name: str, versions: list[ArtifactVersion]) -> None:
        self.name = name
        self.versions = versions

    @property
    def latest_version(self) -> ArtifactVersion:
        return self.versions[-1]

    def __repr__(self) -> str:
        return f"<Artifact {self.name} ({len(self.versions)} versions)>"


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
        sort_by: str = "desc:created",
        page: int | None = None,
        size: int | None = None,
    ) -> list[PipelineRun]:
        """Runs, newest first (``sort_by="asc:created"`` oldest first; ``page``/``size`` page them)."""
        rows = _queries.list_runs(
            self.store, pipeline_name=pipeline_name,
            status=None if status is None else ExecutionStatus(status).value,
            parent_run_id=parent_run_id, limit=limit, sort_by=sort_by, page=page, size=size,
        )
        return [PipelineRun(self, r) for r in rows]

    def get_pipeline(self, name: str) -> Pipeline:
        """A pipeline by name (it exists once it has run)."""
        row = _queries.get_pipeline(self.store, name)
        if row is None:
            raise NotFoundError(f"no pipeline named {name!r} has run here; `unspool runs list` shows the runs")
        return Pipeline(self, row)

    def list_pipelines(self, sort_by: str = "asc:name", page: int | None = None, size: int | None = None) -> list[Pipeline]:
        return [Pipeline(self, r) for r in _queries.list_pipelines(self.store, sort_by, page, size)]

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

    def _steps_page(self, run_id: str, status: str | None, offset: int, limit: int | None) -> list[StepRun]:
        rows = _queries.step_runs_of(self.store, run_id, status=status, offset=offset, limit=limit)
        return [StepRun(self, r) for r in rows]  # inputs and outputs are read when first asked for

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
        if isinstance(version, str) and version.strip().lower() == "latest":
            version = None
        number = None
        if version is not None:
            try:
                number = int(version)
            except (TypeError, ValueError):
                raise NotFoundError(
                    f"version {version!r} of artifact {name!r} is not a version number; pass an int, "
                    "'latest' or None (the latest)"
                ) from None
        row = _queries.get_artifact_version(self.store, name, number)
        if row is None:
            which = f"version {version} of " if version is not None else ""
            raise NotFoundError(
                f"no {which}artifact named {name!r}; `unspool artifacts list` shows the known artifacts"
            )
        return ArtifactVersion(self, row)

    def list_artifact_versions(self, name: str | None = None, *, limit: int | None = None,
                               sort_by: str = "desc:created", page: int | None = None,
                               size: int | None = None) -> list[ArtifactVersion]:
        """Artifact versions, newest first (``sort_by``, ``page`` and ``size`` as for runs)."""
        rows = _queries.list_artifact_versions(self.store, name, limit, sort_by, page, size)
        return [ArtifactVersion(self, r) for r in rows]

    def get_artifact(self, name: str) -> Artifact:
        """An artifact by name, with its versions (oldest first)."""
        versions = sorted(self.list_artifact_versions(name), key=lambda v: v.version)
        if not versions:
            raise NotFoundError(f"no artifact named {name!r}; `unspool artifacts list` shows the known artifacts")
        return Artifact(name, versions)

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
