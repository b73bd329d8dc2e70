"""unspool: tracked ML and AI pipelines whose DAG can unspool at run time.

Write ``@step`` functions and a ``@pipeline`` that calls them; every output becomes a
versioned artifact with lineage, logs are captured per step, and results are cached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import (
    ArtifactDamagedError,
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
    WorkerLostError,
)
from ._pipeline import Budget, Pipeline, pipeline
from ._step import ArtifactConfig, Step, StepRetryConfig, step
from ._types import ArtifactType, ExecutionMode, ExecutionStatus

if TYPE_CHECKING:
    from ._cache_keys import CachePolicy
    from ._client import ArtifactVersion, Client, PipelineRun, Snapshot, StepRun
    from ._context import StepContext, get_step_context
    from ._declarative import PythonTask
    from ._futures import (
        ArtifactChunk,
        ArtifactFuture,
        ChildRunFuture,
        MapResultFuture,
        StepRunFuture,
        unmapped,
    )
    from ._materializers import BaseMaterializer
    from ._parity import (
        Model,
        get_pipeline_context,
        load_artifact,
        log_metadata,
        register_artifact,
        save_artifact,
    )
    from ._spend import spend_exempt

__version__ = "0.1.0"

# Loaded on first use so that `import unspool` stays fast (the client pulls in SQLAlchemy;
# the runner the artifact store and materializers).
_LAZY = {
    "Client": "_client", "PipelineRun": "_client", "StepRun": "_client",
    "ArtifactVersion": "_client", "Snapshot": "_client",
    "PythonTask": "_declarative",
    "ArtifactChunk": "_futures", "ArtifactFuture": "_futures", "MapResultFuture": "_futures",
    "StepRunFuture": "_futures", "ChildRunFuture": "_futures", "unmapped": "_futures",
    "BaseMaterializer": "_materializers",
    "CachePolicy": "_cache_keys",
    "Model": "_parity", "get_pipeline_context": "_parity", "load_artifact": "_parity", "log_metadata": "_parity",
    "register_artifact": "_parity", "save_artifact": "_parity",
    "StepContext": "_context", "get_step_context": "_context",
    "spend_exempt": "_spend",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unspool' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ArtifactChunk",
    "ArtifactConfig",
    "ArtifactDamagedError",
    "ArtifactFuture",
    "ArtifactType",
    "ArtifactVersion",
    "BaseMaterializer",
    "Budget",
    "BudgetExceeded",
    "CachePolicy",
    "ChildRunFuture",
    "Client",
    "ConfigError",
    "ExecutionMode",
    "ExecutionStatus",
    "MapResultFuture",
    "MaterializerError",
    "Model",
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
    "WorkerLostError",
    "get_pipeline_context",
    "get_step_context",
    "load_artifact",
    "log_metadata",
    "pipeline",
    "register_artifact",
    "save_artifact",
    "spend_exempt",
    "step",
    "unmapped",
]
