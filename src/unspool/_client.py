"""``Client``: reading what runs recorded, and the two operations that start work on them.

Reading is :class:`~unspool._models.StoreReader`'s (through ``_queries``): creating a
client and reading never writes, flushes or reaps. Resuming a run and triggering a
snapshot start work and live here, above the engine. Marking runs whose orchestrator died
as stopped is an explicit call (:meth:`Client.reap_dead_runs`, which ``unspool runs list``
and resume make), not a side effect of reading.
"""

from __future__ import annotations

from typing import Any

from . import _resume, _snapshots
from ._models import (
    Artifact,
    ArtifactVersion,
    Pipeline,
    PipelineRun,
    Snapshot,
    StepRun,
    StoreReader,
)

__all__ = ["Artifact", "ArtifactVersion", "Client", "Pipeline", "PipelineRun", "Snapshot", "StepRun"]


class Client(StoreReader):
    """Read access to the stores of the current project (see ``UNSPOOL_HOME``)."""

    def resume_pipeline_run(self, run_id: str) -> PipelineRun:
        """Run a failed or stopped run again as the same run, reusing what completed."""
        return self.get_pipeline_run(_resume.resume_run(run_id, self.stores))

    def delete_pipeline_run(self, id_or_name: str) -> None:
        """Delete a run, its step runs and child runs, and the files of its artifact versions
        that no other run uses (a cached step of a later run keeps the original's files)."""
        from ._deletion import delete_run  # lazy: deleting is rare

        delete_run(self, self.get_pipeline_run(id_or_name).id)

    def reap_dead_runs(self) -> list[str]:
        """Mark runs whose orchestrating process died as stopped; returns their ids."""
        return _resume.reap_dead_runs(self.store)

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
