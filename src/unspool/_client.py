"""Reading what runs recorded: ``Client`` and the models it returns.

The models are plain objects built from store rows; relations (a run's steps, a step's
artifacts, an artifact's producer and consumers) are fetched when first accessed.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import sqlalchemy as sa

from . import _snapshots
from ._errors import NotFoundError
from ._metadata_store import (
    MetadataStore,
    artifact_versions,
    pipeline_runs,
    pipelines,
    step_run_artifacts,
    step_runs,
)
from ._snapshots import Snapshot
from ._types import ExecutionStatus


def _ts(value: float | None) -> _dt.datetime | None:
    return None if value is None else _dt.datetime.fromtimestamp(value)


class ArtifactVersion:
    """One stored version of a named artifact. Passable to steps as an input."""

    _unspool_artifact_version = True

    def __init__(self, client: Client, row: Any) -> None:
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
        with self._client.store.read() as conn:
            ids = conn.execute(
                sa.select(step_run_artifacts.c.step_run_id)
                .where(
                    step_run_artifacts.c.artifact_version_id == self.id,
                    step_run_artifacts.c.direction == "input",
                )
                .distinct()
            ).scalars().all()
        return [self._client.get_step_run(i) for i in ids]

    @property
    def stored_format(self) -> str | None:
        """How the value is stored: "json", "bytes", "npy", "none" or "pickle" (loading a pickle
        runs code from whoever could write the store); None for a materializer of your own."""
        from ._materializers import stored_format

        return stored_format(self.materializer)

    def load(self) -> Any:
        from ._runner import ArtifactRef, artifact_store_for, load_artifact

        return load_artifact(
            artifact_store_for(self.artifact_store_url),
            ArtifactRef(self.uri, self.materializer, self.data_type, None, self.size, f"{self.name}:{self.version}"),
        )

    def verify(self) -> str | None:
        """What is wrong with this version's files (gone, or size or content hash not as
        recorded), or None when they hash to the recorded content hash. Reads every byte."""
        from ._artifact_store import SaveTracker, directory_digest
        from ._runner import artifact_store_for

        store = artifact_store_for(self.artifact_store_url)
        problem = store.damage(self.uri, self.size)
        if problem is None:
            content_hash, _ = directory_digest(store, self.uri, SaveTracker())
            if content_hash != self.content_hash:
                problem = f"its content hashes to {content_hash} but {self.content_hash} was recorded"
        return problem

    def chunk(self, index: int) -> Any:
        from ._futures import ArtifactChunk

        return ArtifactChunk(self, index)

    def __repr__(self) -> str:
        return f"<ArtifactVersion {self.name}:{self.version}>"


class StepRun:
    """One invocation of a step in a run, as stored."""

    def __init__(self, client: Client, row: Any) -> None:
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
        from ._runner import artifact_store_for

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

    def __init__(self, client: Client, row: Any) -> None:
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


class Pipeline:
    """A pipeline as the store knows it: its name and its runs."""

    def __init__(self, client: Client, row: Any) -> None:
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


def _order(table: Any, sort_by: str, default: str) -> Any:
    """``"desc:created"``, ``"asc:name"``...: ZenML's sort_by, on a column of ``table``."""
    direction, _, field = (sort_by or "").partition(":")
    if not field:
        direction, field = "desc", direction or default
    column = {"created": "created_at", "updated": "created_at", "start_time": "start_time"}.get(field, field)
    if direction not in ("asc", "desc") or column not in table.c:
        choices = ", ".join(sorted(c.name for c in table.c))
        raise ValueError(f"sort_by {sort_by!r}: expected 'asc:FIELD' or 'desc:FIELD' with FIELD one of created, {choices}")
    col = table.c[column]
    return col.asc() if direction == "asc" else col.desc()


def _page(query: Any, limit: int | None, page: int | None, size: int | None) -> Any:
    if page is not None or size is not None:
        size = size or 50
        page = page or 1
        if page < 1 or size < 1:
            raise ValueError(f"page and size must be >= 1, got page={page}, size={size}")
        return query.limit(size).offset((page - 1) * size)
    return query.limit(limit) if limit is not None else query


class Client:
    """Read access to the stores of the current project (see ``UNSPOOL_HOME``)."""

    def __init__(self) -> None:
        from ._engine import flush_all, get_environment

        flush_all()
        env = get_environment()
        env.metadata.flush()
        self.store: MetadataStore = env.metadata
        self.artifact_root: str = env.artifact_root
        from ._resume import reap_dead_runs

        reap_dead_runs(self.store)

    def resume_pipeline_run(self, run_id: str) -> PipelineRun:
        """Run a failed or stopped run again as the same run, reusing what completed."""
        from ._resume import resume_run

        return self.get_pipeline_run(resume_run(run_id))

    # -- runs -------------------------------------------------------------------------------------
    def get_pipeline_run(self, id_or_name: str) -> PipelineRun:
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(pipeline_runs).where(
                    sa.or_(pipeline_runs.c.id == id_or_name, pipeline_runs.c.name == id_or_name)
                )
            ).mappings().first()
            if row is None and len(id_or_name) >= 6:
                rows = conn.execute(
                    sa.select(pipeline_runs).where(pipeline_runs.c.id.startswith(id_or_name)).limit(2)
                ).mappings().all()
                row = rows[0] if len(rows) == 1 else None
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
        query = sa.select(pipeline_runs).order_by(_order(pipeline_runs, sort_by, "created_at"))
        if pipeline_name is not None:
            query = query.where(pipeline_runs.c.pipeline_name == pipeline_name)
        if status is not None:
            query = query.where(pipeline_runs.c.status == ExecutionStatus(status).value)
        if parent_run_id is not None:
            query = query.where(pipeline_runs.c.parent_run_id == parent_run_id).order_by(None).order_by(
                pipeline_runs.c.created_at
            )
        query = _page(query, limit, page, size)
        with self.store.read() as conn:
            return [PipelineRun(self, r) for r in conn.execute(query).mappings()]

    def get_pipeline(self, name: str) -> Pipeline:
        """A pipeline by name (it exists once it has run)."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(pipelines).where(pipelines.c.name == name)).mappings().first()
        if row is None:
            raise NotFoundError(f"no pipeline named {name!r} has run here; `unspool runs list` shows the runs")
        return Pipeline(self, row)

    def list_pipelines(self, sort_by: str = "asc:name", page: int | None = None, size: int | None = None) -> list[Pipeline]:
        query = _page(sa.select(pipelines).order_by(_order(pipelines, sort_by, "name")), None, page, size)
        with self.store.read() as conn:
            return [Pipeline(self, r) for r in conn.execute(query).mappings()]

    def delete_pipeline_run(self, id_or_name: str) -> None:
        """Delete a run, its step runs and child runs, and the files of its artifact versions
        that no other run uses (a cached step of a later run keeps the original's files)."""
        from ._deletion import delete_run

        delete_run(self, self.get_pipeline_run(id_or_name).id)

    # -- steps ------------------------------------------------------------------------------------
    def get_step_run(self, step_run_id: str) -> StepRun:
        with self.store.read() as conn:
            row = conn.execute(sa.select(step_runs).where(step_runs.c.id == step_run_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no step run with id {step_run_id!r}")
        return StepRun(self, row)

    def _steps_of(self, run_id: str) -> dict[str, StepRun]:
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(step_runs).where(step_runs.c.run_id == run_id).order_by(step_runs.c.position)
            ).mappings().all()
        steps = {r["invocation_id"]: StepRun(self, r) for r in rows}
        io = self._io_for([s.id for s in steps.values()]) if steps else {}
        for s in steps.values():
            s._io = io.get(s.id, ({}, {}))
        return steps

    def _io_for(self, step_run_ids: list[str]) -> dict[str, tuple[dict[str, list[ArtifactVersion]], dict[str, list[ArtifactVersion]]]]:
        out: dict[str, tuple[dict[str, list[ArtifactVersion]], dict[str, list[ArtifactVersion]]]] = {}
        links = []
        with self.store.read() as conn:
            for i in range(0, len(step_run_ids), 500):
                chunk = step_run_ids[i : i + 500]
                links.extend(
                    conn.execute(
                        sa.select(
                            step_run_artifacts.c.step_run_id, step_run_artifacts.c.direction,
                            step_run_artifacts.c.name.label("io_name"), step_run_artifacts.c.position,
                            artifact_versions,
                        )
                        .join(artifact_versions, artifact_versions.c.id == step_run_artifacts.c.artifact_version_id)
                        .where(step_run_artifacts.c.step_run_id.in_(chunk))
                        .order_by(step_run_artifacts.c.step_run_id, step_run_artifacts.c.position)
                    ).mappings().all()
                )
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
        query = sa.select(artifact_versions).where(artifact_versions.c.name == name)
        if isinstance(version, str) and version.strip().lower() == "latest":
            version = None
        if version is not None:
            try:
                number = int(version)
            except (TypeError, ValueError):
                raise NotFoundError(
                    f"version {version!r} of artifact {name!r} is not a version number; pass an int, "
                    "'latest' or None (the latest)"
                ) from None
            query = query.where(artifact_versions.c.version == number)
        query = query.order_by(artifact_versions.c.version.desc()).limit(1)
        with self.store.read() as conn:
            row = conn.execute(query).mappings().first()
            if row is None and version is None:
                row = conn.execute(sa.select(artifact_versions).where(artifact_versions.c.id == name)).mappings().first()
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
        query = sa.select(artifact_versions).order_by(
            _order(artifact_versions, sort_by, "created_at"), artifact_versions.c.version.desc()
        )
        if name is not None:
            query = query.where(artifact_versions.c.name == name)
        query = _page(query, limit, page, size)
        with self.store.read() as conn:
            return [ArtifactVersion(self, r) for r in conn.execute(query).mappings()]

    # -- snapshots (see _snapshots.py) ----------------------------------------------------------------
    def get_snapshot(self, name_or_id: str) -> Snapshot:
        """A snapshot by name, id or unique id prefix."""
        return _snapshots.get_snapshot(self, name_or_id)

    def list_snapshots(self, pipeline_name: str | None = None) -> list[Snapshot]:
        """Snapshots, newest first."""
        return _snapshots.list_snapshots(self, pipeline_name)

    def trigger_pipeline(
        self,
        snapshot_name_or_id: str | None = None,
        *,
        snapshot_id: str | None = None,
        run_configuration: dict[str, Any] | None = None,
        wait: bool = True,
    ) -> PipelineRun:
        """Run a snapshot in a separate process and return its run.

        ``run_configuration`` has the keys of a config file (e.g. ``{"parameters": {...}}``)
        and is laid over the snapshot's configuration. ``wait=False`` returns as soon as the
        run exists (status ``running``).
        """
        target = snapshot_id or snapshot_name_or_id
        if not target:
            raise TypeError("trigger_pipeline() needs a snapshot: a name or id, or snapshot_id=...")
        return _snapshots.trigger(self, target, run_configuration, wait=wait)

    def get_artifact(self, name: str) -> Artifact:
        """An artifact by name, with its versions (oldest first)."""
        versions = sorted(self.list_artifact_versions(name), key=lambda v: v.version)
        if not versions:
            raise NotFoundError(f"no artifact named {name!r}; `unspool artifacts list` shows the known artifacts")
        return Artifact(name, versions)

    def list_artifacts(self) -> list[dict[str, Any]]:
        """Artifact names with their number of versions and latest version."""
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(
                    artifact_versions.c.name,
                    sa.func.count().label("versions"),
                    sa.func.max(artifact_versions.c.version).label("latest"),
                    sa.func.max(artifact_versions.c.created_at).label("updated"),
                ).group_by(artifact_versions.c.name).order_by(sa.desc("updated"))
            ).mappings().all()
        return [dict(r) for r in rows]
