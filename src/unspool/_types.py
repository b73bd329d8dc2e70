"""Small shared vocabulary: statuses, execution modes, encoded JSON and the orchestrator's
view of an artifact version (no heavy imports, nothing of unspool's)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum


class ExecutionStatus(str, Enum):
    """Status of a pipeline run or a step run.

    A run or step goes ``initializing -> running`` and ends in exactly one of the
    final states. ``cached`` means the step reused an earlier step run's outputs;
    ``skipped`` means an upstream step failed so it could not run; ``stopped`` means
    the run stopped it (fail-fast, a killed orchestrator) before it finished.
    """

    INITIALIZING = "initializing"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CACHED = "cached"
    STOPPED = "stopped"
    SKIPPED = "skipped"

    @property
    def is_finished(self) -> bool:
        return self not in (ExecutionStatus.INITIALIZING, ExecutionStatus.RUNNING)

    @property
    def is_successful(self) -> bool:
        return self in (ExecutionStatus.COMPLETED, ExecutionStatus.CACHED)

    def __str__(self) -> str:
        return self.value


class ExecutionMode(str, Enum):
    """What a run does when a step fails.

    ``FAIL_FAST``: no new step starts, queued steps are stopped, the body is interrupted.
    ``STOP_ON_FAILURE``: no new step starts; steps already running finish.
    ``CONTINUE_ON_FAILURE``: independent work goes on; dependants of the failed step are skipped.
    """

    FAIL_FAST = "FAIL_FAST"
    STOP_ON_FAILURE = "STOP_ON_FAILURE"
    CONTINUE_ON_FAILURE = "CONTINUE_ON_FAILURE"

    def __str__(self) -> str:
        return self.value


class ArtifactType(str, Enum):
    """The kinds of artifact ZenML names (``BaseMaterializer.ASSOCIATED_ARTIFACT_TYPE``)."""

    DATA = "DataArtifact"
    MODEL = "ModelArtifact"
    DATA_ANALYSIS = "DataAnalysisArtifact"
    SCHEMA = "SchemaArtifact"
    STATISTICS = "StatisticsArtifact"
    SERVICE = "ServiceArtifact"
    BASE = "BaseArtifact"

    def __str__(self) -> str:
        return self.value


class EncodedJSON(dict):  # type: ignore[type-arg]
    """A read-only-by-convention dict that remembers its JSON text, so the metadata store
    encodes a value shared by thousands of rows (a step's configuration) once."""

    @property
    def text(self) -> str:
        text = self.__dict__.get("_text")
        if text is None:
            text = json.dumps(self, sort_keys=True)
            self.__dict__["_text"] = text
        return text


@dataclass(slots=True)
class Produced:
    """An artifact version as the orchestrator knows it (version set by the store flush)."""

    id: str
    name: str
    uri: str
    materializer: str
    data_type: str
    content_hash: str
    size: int
    item_count: int | None
    producer_step_run_id: str | None
    version: int | None = None
    # Its files were written or found intact by this process since they were recorded: a
    # load in the run need not list them again (see ``_artifact_io.load_artifact``).
    intact: bool = field(default=False, compare=False, repr=False)
