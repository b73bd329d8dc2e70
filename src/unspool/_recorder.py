"""Everything a run writes and announces: step runs, lineage, artifact versions, events.

Every status transition of a step run passes through :meth:`Recorder.step`, which in one
call writes the step run's row (inserted the first time, updated after; the buffered
writer merges both when they meet before a flush), the lineage links, the artifact
versions of a completed step's outputs, and emits the step's event. The run's own row and
events go through :meth:`Recorder.run`. Nothing else in the engine touches the metadata
store or the event stream, so what the store says and what the live view shows cannot
disagree.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ._batch_sql import Link
from ._cross_run import upstream_name
from ._events import Event, events
from ._ids import new_id
from ._invocation import link
from ._types import EncodedJSON, ExecutionStatus, Produced

if TYPE_CHECKING:
    from ._invocation import Invocation
    from ._metadata_store import MetadataStore
    from ._runner import StepResult
    from ._step import OutputSpec

S = ExecutionStatus
NO_METADATA = EncodedJSON()  # the step metadata of most rows: encoded once, never mutated
ArtifactNamer = Callable[["Invocation", "OutputSpec"], str]


class Recorder:
    """The writes and events of one run (see the module docstring)."""

    def __init__(self, run_id: str, pipeline_name: str, store: MetadataStore, artifact_name: ArtifactNamer) -> None:
        self.run_id = run_id
        self.pipeline_name = pipeline_name
        self.store = store
        self.artifact_name = artifact_name

    # -- step runs ------------------------------------------------------------------------------------
    def step(
        self,
        inv: Invocation,
        status: ExecutionStatus,
        *,
        links: Iterable[Link] = (),
        outputs: StepResult | None = None,
        **fields: Any,
    ) -> dict[str, Produced]:
        """Record that ``inv`` is now ``status``: its row, ``links``, the artifact versions of
        ``outputs`` (a completed step's result) with their output links, and the event.

        Returns the artifact versions made from ``outputs``. When they cannot be recorded
        (a name no substitution fills) it raises before anything is written.
        """
        produced: dict[str, Produced] = {}
        out_links: list[Link] = []
        if outputs is not None:
            produced, out_links = self._versions(inv, outputs)
        if inv.recorded:
            self.store.update_step_run(inv.step_run_id, status=status.value, **fields)
        else:
            row = self.step_row(inv, status)
            row.update(fields)
            self.store.insert_step_run(row)
            inv.recorded = True
        all_links = [*links, *out_links]
        if all_links:
            self.store.insert_links(all_links)
        self.emit_step(inv, status)
        return produced

    def attempts(self, inv: Invocation, **fields: Any) -> None:
        """Update a step run without a status change (an attempt failed; a retry follows)."""
        self.store.update_step_run(inv.step_run_id, **fields)

    def forget(self, step_run_id: str) -> None:
        """Drop a step run of an earlier execution that a resumed run replaces."""
        self.store.delete_step_run(step_run_id)

    def step_row(self, inv: Invocation, status: ExecutionStatus) -> dict[str, Any]:
        return {
            "id": inv.step_run_id,
            "run_id": self.run_id,
            "invocation_id": inv.id,
            "position": inv.position,
            "step_name": inv.step.name,
            "status": status.value,
            "parameters": inv.params,
            "config": inv.config or inv.step.config.recorded(),
            "upstream": [upstream_name(inv.run, up) for up in inv.upstream],
            "cache_key": inv.cache_key,
            "original_step_run_id": None,
            "error": None,
            "attempts": [],
            "step_metadata": NO_METADATA,
            "logs_uri": None,
            "start_time": inv.start_time,
            "end_time": None,
        }

    def _versions(self, inv: Invocation, result: StepResult) -> tuple[dict[str, Produced], list[Link]]:
        # may raise: first. Interned, like the type and materializer paths below: a map's
        # thousands of versions share one copy of each instead of holding their own.
        names = {spec.name: sys.intern(self.artifact_name(inv, spec)) for spec in inv.step.outputs}
        produced: dict[str, Produced] = {}
        links = []
        now = time.time()
        for spec in inv.step.outputs:
            rec = result.outputs[spec.name]
            av = Produced(
                id=new_id(), name=names[spec.name], uri=rec.uri,
                materializer=sys.intern(rec.materializer), data_type=sys.intern(rec.data_type),
                content_hash=rec.content_hash, size=rec.size, item_count=rec.item_count,
                producer_step_run_id=inv.step_run_id, intact=True,
            )
            meta = dict(rec.metadata)
            if spec.run_metadata:
                meta.update(spec.run_metadata)
            self.store.insert_artifact_version(
                {
                    "id": av.id, "name": av.name, "uri": av.uri, "data_type": av.data_type,
                    "materializer": av.materializer, "content_hash": av.content_hash,
                    "size": av.size, "item_count": av.item_count,
                    "producer_step_run_id": inv.step_run_id, "run_id": self.run_id,
                    "tags": list(spec.tags), "artifact_metadata": meta, "created_at": now,
                },
                av,
            )
            links.append(link(inv, av, "output", spec.name))
            produced[spec.name] = av
        return produced, links

    def emit_step(self, inv: Invocation, status: ExecutionStatus) -> None:
        if events.active:
            events.emit(
                Event("step", self.run_id, status, invocation_id=inv.id, step_name=inv.step.name,
                      step_run_id=inv.step_run_id, detail=(inv.error or {}).get("message"))
            )

    # -- the run --------------------------------------------------------------------------------------
    def run(self, status: ExecutionStatus | None, detail: str | None = None, **fields: Any) -> None:
        """Update the run's row (``status`` and/or ``fields``) and announce a status change."""
        if status is not None:
            fields["status"] = status.value
        if fields:
            self.store.update_run(self.run_id, **fields)
        if status is not None and events.active:
            events.emit(Event("run", self.run_id, status, detail=detail, step_name=self.pipeline_name))
