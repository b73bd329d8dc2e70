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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar, overload

from ._errors import StepDefinitionError
from ._step import Step, StepRetryConfig
from ._types import ExecutionMode

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Budget:
    """Hard limits for one run (children included). ``None`` means unlimited.

    ``spend`` holds user-named limits that steps charge through
    ``get_step_context().spend(...)``, e.g. ``{"tokens": 200_000, "usd": 0.5}`` (``_spend.py``).
    """

    max_steps: int | None = None
    max_fan_out: int | None = None
    max_parallelism: int | None = None
    max_depth: int | None = None
    max_duration_s: float | None = None
    spend: dict[str, float] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        from ._spend import validate

        object.__setattr__(self, "spend", validate(self.spend))
        for f in dataclasses.fields(self):
            if f.name == "spend":
                continue
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"Budget.{f.name} must be a positive number or None, got {value!r}")


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    dynamic: bool = False
    enable_cache: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    substitutions: dict[str, str] = field(default_factory=dict)
    execution_mode: ExecutionMode = ExecutionMode.CONTINUE_ON_FAILURE
    retry: StepRetryConfig | None = None
    budget: Budget | None = None
    on_failure: Callable[..., Any] | None = None
    on_success: Callable[..., Any] | None = None
    on_init: Callable[..., Any] | None = None
    on_cleanup: Callable[..., Any] | None = None
    depends_on: tuple[Any, ...] = ()
    config_path: str | None = None
    run_name: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_parallelism: int | None = None
    orchestrator: dict[str, Any] = field(default_factory=dict)
    # ZenML options recorded with the run (see _parity for what each means locally)
    tags: tuple[str, ...] = ()
    enable_step_logs: bool | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    model: Any = None

    def recorded(self) -> dict[str, Any]:
        from ._step import _jsonable

        return {
            "dynamic": self.dynamic,
            "enable_cache": self.enable_cache,
            "settings": _jsonable(self.settings),
            "substitutions": dict(self.substitutions),
            "execution_mode": str(self.execution_mode),
            "retry": dataclasses.asdict(self.retry) if self.retry else None,
            "budget": dataclasses.asdict(self.budget) if self.budget else None,
            "config_path": self.config_path,
            "orchestrator": _jsonable(self.orchestrator),
            **({"tags": list(self.tags)} if self.tags else {}),
            **({"enable_step_logs": self.enable_step_logs} if self.enable_step_logs is not None else {}),
            **({"environment": _jsonable(self.environment)} if self.environment else {}),
            **({"extra": _jsonable(self.extra)} if self.extra else {}),
            **({"model": _recorded_model(self.model)} if self.model is not None else {}),
        }


def _recorded_model(model: Any) -> Any:
    from ._parity import recorded_model

    return recorded_model(model)


_PIPELINE_OPTIONS = {f.name for f in dataclasses.fields(PipelineConfig)} - {"name"} | {"name"}


class Pipeline(Generic[F]):
    """A function decorated with ``@pipeline``. Calling it runs it.

    ``Pipeline(steps=[PythonTask(...), ...], name=...)`` builds a declarative pipeline from a
    list of tasks instead (see ``_declarative.py``); ``.execute(config=...)`` runs either kind.
    """

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
            from ._declarative import build_pipeline

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
            from ._config_file import options_from_file

            overrides = options_from_file(self, overrides)
        merged = _normalise(dict(overrides))
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
        from ._snapshots import create_snapshot

        return create_snapshot(self, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from ._engine import current_run, run_pipeline

        parent = current_run()
        if parent is not None:
            return parent.call_child(self, args, kwargs, mode="sync")
        from ._loading import loading

        where = loading()
        if where is not None:
            print(
                f"unspool: not running pipeline {self.name!r}, called while unspool imported {where} "
                "to find a pipeline (put the call under `if __name__ == \"__main__\":` to silence this)",
                file=sys.__stderr__,
            )
            return None
        from ._parity import run_environment

        with run_environment(self.config.environment):
            return run_pipeline(self, args, kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Run as a child pipeline concurrently (inside a dynamic pipeline body)."""
        from ._engine import require_body

        return require_body(f"{self.name}.submit()").call_child(self, args, kwargs, mode="submit")

    def embed(self, *args: Any, **kwargs: Any) -> Any:
        """Run this pipeline's body inside the current run, without a child run."""
        from ._engine import require_body

        return require_body(f"{self.name}.embed()").embed_child(self, args, kwargs)


def _normalise(options: dict[str, Any]) -> dict[str, Any]:
    mode = options.get("execution_mode")
    if mode is not None and not isinstance(mode, ExecutionMode):
        try:
            options["execution_mode"] = ExecutionMode(str(mode).upper())
        except ValueError:
            raise StepDefinitionError(
                f"execution_mode must be one of {[m.value for m in ExecutionMode]}, got {mode!r}"
            ) from None
    retry = options.get("retry")
    if isinstance(retry, dict):
        options["retry"] = StepRetryConfig(**retry)
    budget = options.get("budget")
    if isinstance(budget, dict):
        options["budget"] = Budget(**budget)
    tags = options.get("tags")
    if tags is not None:
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise StepDefinitionError(f"tags must be a list of strings, got {tags!r}")
        options["tags"] = tuple(tags)
    for key in ("environment", "extra"):
        if key in options and options[key] is not None and not isinstance(options[key], dict):
            raise StepDefinitionError(f"{key} must be a dict, got {type(options[key]).__name__}")
    if "depends_on" in options and options["depends_on"] is not None:
        options["depends_on"] = tuple(options["depends_on"])
    for key in ("settings", "substitutions", "parameters", "steps", "orchestrator", "environment", "extra"):
        if key in options and options[key] is None:
            options[key] = {}
    if options.get("orchestrator"):
        from ._executors import validate_orchestrator

        options["orchestrator"] = validate_orchestrator(options["orchestrator"])
    mp = options.get("max_parallelism")
    if mp is not None and (not isinstance(mp, int) or mp < 1):
        raise StepDefinitionError(f"max_parallelism must be a positive int, got {mp!r}")
    for dep in options.get("depends_on") or ():
        if not isinstance(dep, Step):
            raise StepDefinitionError(f"depends_on takes steps, got {dep!r}")
    return options


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
        return Pipeline(f, PipelineConfig(name=name, **_normalise(opts)))

    if func is not None:
        return wrap(func)
    return wrap
