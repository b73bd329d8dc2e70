"""Pipeline configuration: what ``@pipeline``, ``with_options``, config files and
snapshots set, the checks every value goes through (:func:`normalise`), and the one JSON
form in which runs and snapshots record it (:func:`recorded_options`).

Recorded configuration is re-applied by ``_config_file.reapply_recorded``, which validates
it with the same pydantic schema as a YAML config file: what is recorded is what is
re-applied, for resume and for snapshots alike.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from ._errors import ConfigError, StepDefinitionError, UnspoolError
from ._spend import validate as validate_spend
from ._step import Step, StepRetryConfig, _jsonable
from ._types import ExecutionMode


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
        object.__setattr__(self, "spend", validate_spend(self.spend))
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
        """What a run records: :func:`recorded_options` (values that cannot be stored as JSON
        are listed under ``unrecorded`` and make a resume fail) plus ``dynamic`` and
        ``config_path`` as a record, and the ZenML options that are only recorded."""
        return {
            "dynamic": self.dynamic, **recorded_options(self, strict=False), "config_path": self.config_path,
            **({"tags": list(self.tags)} if self.tags else {}),
            **({"enable_step_logs": self.enable_step_logs} if self.enable_step_logs is not None else {}),
            **({"environment": _jsonable(self.environment)} if self.environment else {}),
            **({"extra": _jsonable(self.extra)} if self.extra else {}),
            **({"model": recorded_model(self.model)} if self.model is not None else {}),
        }


def recorded_model(model: Any) -> Any:
    """A ``model=`` option as JSON (unspool has no model store: it is recorded, nothing more)."""
    if model is None:
        return None
    if hasattr(model, "recorded"):
        return model.recorded()
    if isinstance(model, dict):
        return model
    return {"name": getattr(model, "name", repr(model)), "version": getattr(model, "version", None)}


# Every option ``with_options`` can set that is data (not code: hooks and ``depends_on`` come
# from the pipeline's code). Runs and snapshots record exactly these, resume and triggering
# re-apply exactly these (``_config_file.reapply_recorded``).
RECORDED_OPTIONS = (
    "enable_cache", "execution_mode", "settings", "substitutions", "retry", "budget",
    "orchestrator", "run_name", "max_parallelism", "parameters", "steps",
)


def recorded_options(config: PipelineConfig, *, strict: bool) -> dict[str, Any]:
    """:data:`RECORDED_OPTIONS` of ``config`` as JSON.

    ``strict``: a value JSON cannot hold is an error (snapshots). Otherwise (runs) it is
    recorded as its ``repr`` and its key listed under ``unrecorded``.
    """
    out: dict[str, Any] = {}
    unrecorded: list[str] = []
    for key in RECORDED_OPTIONS:
        value = getattr(config, key)
        try:
            out[key] = plain(key, value)
        except UnspoolError:
            if strict:
                raise
            out[key] = _jsonable(value)
            unrecorded.append(key)
    if unrecorded:
        out["unrecorded"] = unrecorded
    return out


def plain(key: str, value: Any) -> Any:
    """``value`` as JSON data (dataclasses as mappings, enums as their value); an
    :class:`UnspoolError` naming ``key`` when it holds anything else."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(f"{key}[{i}]", v) for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise UnspoolError(
        f"cannot record option {key}: a {type(value).__name__} is not JSON-serialisable; "
        "configuration is stored as JSON (numbers, strings, lists, mappings)"
    )


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
