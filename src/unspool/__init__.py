"""unspool: tracked ML and AI pipelines whose DAG can unspool at run time.

Write ``@step`` functions and a ``@pipeline`` that calls them; every output becomes a
versioned artifact with lineage, logs are captured per step, and results are cached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._declarative import PythonTask
from ._errors import (
    BudgetExceeded,
    ConfigError,
    MaterializerError,
    NotFoundError,
    PipelineError,
    RunFailedError,
    StepDefinitionError,
    StepFailedError,
    StepInputError,
    StepOutputError,
    StoreError,
    UnspoolError,
)
from ._futures import ArtifactChunk, ArtifactFuture, MapResultFuture, StepRunFuture, unmapped
from ._materializers import BaseMaterializer
from ._pipeline import Budget, Pipeline, pipeline
from ._runner import StepContext, get_step_context, log_metadata
from ._step import ArtifactConfig, Step, StepRetryConfig, step
from ._types import ExecutionMode, ExecutionStatus

if TYPE_CHECKING:
    from ._client import ArtifactVersion, Client, PipelineRun, Snapshot, StepRun

__version__ = "0.1.0"

_LAZY = {"Client", "PipelineRun", "StepRun", "ArtifactVersion", "Snapshot"}


def __getattr__(name: str) -> Any:
    # The client pulls in SQLAlchemy; load it on first use so `import unspool` stays fast.
    if name in _LAZY:
        from . import _client

        return getattr(_client, name)
    raise AttributeError(f"module 'unspool' has no attribute {name!r}")


__all__ = [
    "ArtifactChunk",
    "ArtifactConfig",
    "ArtifactFuture",
    "ArtifactVersion",
    "BaseMaterializer",
    "Budget",
    "BudgetExceeded",
    "Client",
    "ConfigError",
    "ExecutionMode",
    "ExecutionStatus",
    "MapResultFuture",
    "MaterializerError",
    "NotFoundError",
    "Pipeline",
    "PipelineError",
    "PipelineRun",
    "PythonTask",
    "RunFailedError",
    "Snapshot",
    "Step",
    "StepContext",
    "StepDefinitionError",
    "StepFailedError",
    "StepInputError",
    "StepOutputError",
    "StepRetryConfig",
    "StepRun",
    "StepRunFuture",
    "StoreError",
    "UnspoolError",
    "get_step_context",
    "log_metadata",
    "pipeline",
    "step",
    "unmapped",
]
