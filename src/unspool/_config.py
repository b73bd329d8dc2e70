"""Pipeline configuration: what ``@pipeline``, ``with_options``, config files and
snapshots set, and the checks every value goes through (:func:`normalise`)."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ._errors import ConfigError, StepDefinitionError
from ._step import Step, StepRetryConfig, _jsonable
from ._types import ExecutionMode


@dataclass(frozen=True)
class Budget:
    """Hard limits for one run (children included). ``None`` means unlimited."""

    max_steps: int | None = None
    max_fan_out: int | None = None
    max_parallelism: int | None = None
    max_depth: int | None = None
    max_duration_s: float | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
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

    def recorded(self) -> dict[str, Any]:
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
        }


_PIPELINE_OPTIONS = {f.name for f in dataclasses.fields(PipelineConfig)} - {"name"} | {"name"}


def normalise(options: dict[str, Any]) -> dict[str, Any]:
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
    if "depends_on" in options and options["depends_on"] is not None:
        options["depends_on"] = tuple(options["depends_on"])
    for key in ("settings", "substitutions", "parameters", "steps", "orchestrator"):
        if key in options and options[key] is None:
            options[key] = {}
    if options.get("orchestrator"):
        from ._executors import validate_orchestrator  # lazy: keeps `import unspool` light

        options["orchestrator"] = validate_orchestrator(options["orchestrator"])
    mp = options.get("max_parallelism")
    if mp is not None and (not isinstance(mp, int) or mp < 1):
        raise StepDefinitionError(f"max_parallelism must be a positive int, got {mp!r}")
    for dep in options.get("depends_on") or ():
        if not isinstance(dep, Step):
            raise StepDefinitionError(f"depends_on takes steps, got {dep!r}")
    return options


def _step_parameter_problems(step: Step[Any], overrides: dict[str, Any]) -> list[tuple[str, str]]:
    signature = step.signature
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return []
    known = list(signature.parameters)
    return [
        (f"steps.{step.name}.parameters.{name}", f"step {step.name!r} has no parameter {name!r}; "
         f"expected one of: {', '.join(known) or '(it takes none)'}")
        for name in (overrides.get("parameters") or {})
        if name not in known
    ]


def check_compiled_steps(config: PipelineConfig, steps: list[Step[Any]]) -> None:
    """After a static pipeline compiled: every name under ``steps:`` must be one of its steps."""
    by_name = {s.name: s for s in steps}
    problems: list[tuple[str, str]] = []
    for name, overrides in config.steps.items():
        step = by_name.get(name)
        if step is None:
            problems.append(
                (f"steps.{name}", f"pipeline {config.name!r} has no step named {name!r}; expected "
                 f"one of: {', '.join(sorted(by_name)) or '(it has no steps)'}")
            )
        else:
            problems.extend(_step_parameter_problems(step, overrides))
    if problems:
        raise ConfigError(problems, file=config.config_path)
