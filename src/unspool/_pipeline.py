"""``@pipeline``: the function whose body creates the steps of a run.

``dynamic=False`` (static): the body runs once to record the DAG, which is validated and
stored, then executed. ``dynamic=True``: the body runs during execution and may branch,
loop and wait on results. Both are executed by the same engine (``_engine.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar, overload

from ._config import _PIPELINE_OPTIONS, Budget, PipelineConfig, normalise
from ._context import current_run, require_body
from ._errors import StepDefinitionError
from ._step import StepRetryConfig
from ._types import ExecutionMode

F = TypeVar("F", bound=Callable[..., Any])


class Pipeline(Generic[F]):
    """A function decorated with ``@pipeline``. Calling it runs it.

    ``Pipeline(steps=[PythonTask(...), ...], name=...)`` builds a declarative pipeline from a
    list of tasks instead (see ``_declarative.py``); ``.execute(config=...)`` runs either kind.
    """

    _unspool_pipeline = True  # how ``_loading`` recognises a pipeline without importing this module

    def __init__(
        self,
        func: F | None = None,
        config: PipelineConfig | None = None,
        *,
        steps: list[Any] | None = None,
        name: str | None = None,
    ) -> None:
        if steps is not None:
            if func is not None or config is not None:
                raise StepDefinitionError(
                    "Pipeline(steps=[...]) builds a declarative pipeline from tasks; pass steps or "
                    "a function, not both"
                )
            from ._declarative import build_pipeline  # lazy: keeps `import unspool` light

            caller = sys._getframe(1).f_globals.get("__name__", "__main__")
            func, config = build_pipeline(steps, name=name, module=caller)  # type: ignore[assignment]
        elif func is None or config is None:
            raise StepDefinitionError(
                "Pipeline() needs steps=[PythonTask(function=..., name=...), ...]; to make a "
                "pipeline from a function, decorate it with @pipeline"
            )
        self.func = func
        self.config = config
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.func)

    def __repr__(self) -> str:
        return f"<pipeline {self.name}{' (dynamic)' if self.config.dynamic else ''}>"

    def with_options(self, **overrides: Any) -> Pipeline[F]:
        """A copy with some options changed (``config_path=`` loads a YAML config)."""
        unknown = set(overrides) - _PIPELINE_OPTIONS
        if unknown:
            raise StepDefinitionError(
                f"with_options() of pipeline {self.name!r} got unknown option(s) {sorted(unknown)}; "
                f"valid options are {sorted(_PIPELINE_OPTIONS)}"
            )
        if overrides.get("config_path") is not None:
            from ._config_file import options_from_file  # lazy: yaml and pydantic on first use

            overrides = options_from_file(self, overrides)
        merged = normalise(dict(overrides))
        for key in ("settings", "substitutions", "parameters", "environment", "extra"):
            if key in merged:
                merged[key] = {**getattr(self.config, key), **merged[key]}
        return Pipeline(self.func, dataclasses.replace(self.config, **merged))

    def execute(self, config: str | Path | None = None, **params: Any) -> Any:
        """Run with an optional YAML config file (see ``_config_file.py``); returns the PipelineRun.

        ``params`` are the pipeline's parameters and win over the file's ``parameters:``.
        """
        pipe = self.with_options(config_path=str(config)) if config is not None else self
        return pipe(**params)

    def create_snapshot(self, name: str) -> Any:
        """Store a runnable reference to this pipeline and its configuration under ``name``.

        Returns the :class:`~unspool.Snapshot`; trigger it with ``Client().trigger_pipeline``.
        """
        from ._snapshots import create_snapshot  # lazy: the stores (SQLAlchemy) on first use

        return create_snapshot(self, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        parent = current_run()
        if parent is not None:
            return parent.call_child(self, args, kwargs, mode="sync")
        from ._loading import loading  # lazy: the engine and stores load on the first run

        where = loading()
        if where is not None:
            print(
                f"unspool: not running pipeline {self.name!r}, called while unspool imported {where} "
                "to find a pipeline (put the call under `if __name__ == \"__main__\":` to silence this)",
                file=sys.__stderr__,
            )
            return None
        from ._engine import run_pipeline  # lazy: the engine and stores load on the first run
        from ._parity import run_environment  # lazy: as the engine

        with run_environment(self.config.environment):
            return run_pipeline(self, args, kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Run as a child pipeline concurrently (inside a dynamic pipeline body)."""
        return require_body(f"{self.name}.submit()").call_child(self, args, kwargs, mode="submit")

    def embed(self, *args: Any, **kwargs: Any) -> Any:
        """Run this pipeline's body inside the current run, without a child run."""
        return require_body(f"{self.name}.embed()").embed_child(self, args, kwargs)


@overload
def pipeline(func: F, /) -> Pipeline[F]: ...


@overload
def pipeline(
    *,
    name: str | None = None,
    dynamic: bool = False,
    enable_cache: bool = True,
    settings: dict[str, Any] | None = None,
    substitutions: dict[str, str] | None = None,
    execution_mode: ExecutionMode | str = ExecutionMode.CONTINUE_ON_FAILURE,
    retry: StepRetryConfig | None = None,
    budget: Budget | None = None,
    on_failure: Callable[..., Any] | None = None,
    on_success: Callable[..., Any] | None = None,
    on_init: Callable[..., Any] | None = None,
    on_cleanup: Callable[..., Any] | None = None,
    depends_on: list[Any] | None = None,
    max_parallelism: int | None = None,
    tags: list[str] | None = None,
    enable_step_logs: bool | None = None,
    environment: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    model: Any = None,
) -> Callable[[F], Pipeline[F]]: ...


def pipeline(func: Any = None, /, **options: Any) -> Any:
    """Turn a function into a pipeline. ``dynamic=True`` runs its body at run time."""

    def wrap(f: F) -> Pipeline[F]:
        opts = dict(options)
        name = opts.pop("name", None) or f.__name__
        unknown = set(opts) - _PIPELINE_OPTIONS
        if unknown:
            raise StepDefinitionError(
                f"@pipeline got unknown option(s) {sorted(unknown)}; valid options are "
                f"{sorted(_PIPELINE_OPTIONS - {'name'})}"
            )
        return Pipeline(f, PipelineConfig(name=name, **normalise(opts)))

    if func is not None:
        return wrap(func)
    return wrap
