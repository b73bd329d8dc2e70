"""YAML configuration files: their schema, validation, and how they apply to a pipeline.

A config file configures one run without touching code::

    parameters: {n: 3}             # the pipeline function's parameters
    enable_cache: false
    execution_mode: FAIL_FAST      # or STOP_ON_FAILURE, CONTINUE_ON_FAILURE
    run_name: nightly-{date}
    max_parallelism: 4             # steps running at once (default 16)
    settings: {...}                # free-form
    substitutions: {suffix: v2}    # for {placeholders} in run and artifact names
    budget: {max_steps: 100, max_fan_out: 10, max_parallelism: 4, max_depth: 2, max_duration_s: 600,
            spend: {tokens: 200000, usd: 0.5}}
    retry: {max_retries: 2, delay: 1.0, backoff: 2.0}
    orchestrator: {type: local, enable_parallel: true}   # see _executors.KNOWN_EXECUTORS
    steps:
      some_step:
        parameters: {arg: 3}
        enable_cache: false
        retry: {max_retries: 1}
        settings: {...}
        runtime: isolated          # or inline
        substitutions: {...}
        extra: {...}
        timeout: 30

Everything is checked by the pydantic models below (unknown keys and wrong types are
errors), then against the pipeline: ``parameters`` must be parameters of the pipeline
function; for a *dynamic* pipeline every name under ``steps:`` must be a step listed in
``@pipeline(depends_on=[...])`` and its ``parameters`` parameters of that step. A *static*
pipeline's steps are only known once its body has been compiled, so the engine checks the
names under ``steps:`` right after compiling (:func:`check_compiled_steps`): a name that is
not a step of the pipeline fails the run before any step starts. Every problem is one
:class:`~unspool.ConfigError` naming the file, the key path and what was expected.

Applying (:func:`options_from_file`, called by ``Pipeline.with_options(config_path=...)``):
the file's values are laid over the pipeline's configuration, and keyword arguments given to
the same ``with_options`` call are laid over the file's. Mappings (``parameters``,
``settings``, ``substitutions`` and each step's entry under ``steps``) are merged key by
key; everything else is replaced. The CLI calls :func:`apply_config_file`.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._config import RECORDED_OPTIONS, _step_parameter_problems, check_compiled_steps, normalise
from ._errors import ConfigError
from ._executors import validate_orchestrator

if TYPE_CHECKING:
    from ._pipeline import Pipeline


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # `key:` with nothing after it in YAML means "not set"
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class RetrySection(_Section):
    max_retries: int = Field(1, ge=0)
    delay: float = Field(0.0, ge=0)
    backoff: float = Field(1.0, gt=0)


class BudgetSection(_Section):
    max_steps: int | None = Field(None, gt=0)
    max_fan_out: int | None = Field(None, gt=0)
    max_parallelism: int | None = Field(None, gt=0)
    max_depth: int | None = Field(None, gt=0)
    max_duration_s: float | None = Field(None, gt=0)
    spend: dict[str, float] | None = None  # checked by Budget (_spend.validate)


class StepSection(_Section):
    parameters: dict[str, Any] = {}
    enable_cache: bool | None = None
    retry: RetrySection | None = None
    settings: dict[str, Any] = {}
    runtime: Literal["inline", "isolated"] | None = None
    substitutions: dict[str, str] = {}
    extra: dict[str, Any] = {}
    timeout: float | None = Field(None, gt=0)


class ConfigFile(_Section):
    """The whole file. Only the keys present in it are applied."""

    parameters: dict[str, Any] = {}
    enable_cache: bool | None = None
    execution_mode: Literal["FAIL_FAST", "STOP_ON_FAILURE", "CONTINUE_ON_FAILURE"] | None = None
    settings: dict[str, Any] = {}
    substitutions: dict[str, str] = {}
    budget: BudgetSection | None = None
    retry: RetrySection | None = None
    run_name: str | None = None
    max_parallelism: int | None = Field(None, gt=0)
    orchestrator: dict[str, Any] | None = None
    steps: dict[str, StepSection] = {}

    @field_validator("execution_mode", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("steps", mode="before")
    @classmethod
    def _empty_steps(cls, value: Any) -> Any:
        if isinstance(value, dict):  # `some_step:` with nothing under it
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    def options(self) -> dict[str, Any]:
        """The keys set in the file, as ``Pipeline.with_options`` keyword arguments."""
        return self.model_dump(exclude_unset=True, exclude_none=True)


# -- loading -----------------------------------------------------------------------------------

def load_config_file(path: str | Path) -> ConfigFile:
    """Read and validate a YAML config file; any problem is a :class:`ConfigError`."""
    file = Path(path).expanduser()
    shown = str(file.resolve()) if file.exists() else str(file)
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise ConfigError(
            [("", f"the file {what}; pass the path of a YAML config file")], file=shown
        )
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"not valid YAML{where}: {problem}")], file=shown) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"cannot be read: {exc}")], file=shown) from None
    return validate_config(data, file=shown)


def validate_config(data: Any, *, file: str | None = None) -> ConfigFile:
    """Validate already-parsed configuration (a config file's or a run configuration)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [("", f"expected a mapping of configuration keys at the top level, got {_short(data)}")],
            file=file,
        )
    try:
        config = ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_problem(err) for err in exc.errors()], file=file) from None
    if config.orchestrator is not None:
        try:
            config.orchestrator = validate_orchestrator(config.orchestrator)
        except ConfigError as exc:
            raise ConfigError(exc.problems, file=file) from None
    return config


def _problem(err: Any) -> tuple[str, str]:
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return key, f"unknown key; expected one of: {', '.join(allowed)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return key, f"expected a mapping, got {_short(err['input'])}"
    message = err["msg"]
    for prefix in ("Input should be ", "Value should be "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if message.startswith(("greater", "less")):
        message = f"a number {message}"
    return key, f"expected {message}, got {_short(err['input'])}"


def _allowed_keys(loc: list[str]) -> list[str]:
    """The keys the model at ``loc`` accepts (``steps.<name>`` skips the step name)."""
    model: Any = ConfigFile
    i = 0
    while i < len(loc):
        part = loc[i]
        if model is ConfigFile and part == "steps":
            model, i = StepSection, i + 2
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ()) or (annotation,)
        nested = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nested is None:
            return []
        model, i = nested, i + 1
    return list(model.model_fields)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- applying ------------------------------------------------------------------------------------

_MERGED = ("parameters", "settings", "substitutions")
_STEP_MERGED = ("parameters", "settings", "substitutions", "extra")


def merge_step_overrides(*layers: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Lay ``steps:`` sections over each other: per step, per key; mappings merged."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for name, overrides in (layer or {}).items():
            target = out.setdefault(name, {})
            for key, value in (overrides or {}).items():
                if key in _STEP_MERGED and isinstance(value, dict) and isinstance(target.get(key), dict):
                    target[key] = {**target[key], **value}
                else:
                    target[key] = value
    return out


def options_from_file(pipeline: Pipeline[Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``with_options`` arguments with the file at ``overrides["config_path"]`` applied.

    The result holds the file's options under the explicit ones; ``config_path`` becomes an
    absolute path (it is recorded on the run).
    """
    path = Path(overrides["config_path"]).expanduser().resolve()
    config = load_config_file(path)
    file_options = config.options()
    dynamic = overrides.get("dynamic", pipeline.config.dynamic)
    depends_on = overrides.get("depends_on", pipeline.config.depends_on) or ()
    check_against_pipeline(
        file_options, pipeline=pipeline, dynamic=dynamic, depends_on=tuple(depends_on), file=str(path)
    )
    merged = dict(file_options)
    for key, value in overrides.items():
        if key in _MERGED and isinstance(value, dict):
            merged[key] = {**file_options.get(key, {}), **value}
        elif key == "steps":
            merged[key] = merge_step_overrides(file_options.get("steps"), value)
        else:
            merged[key] = value
    if "steps" in merged:
        merged["steps"] = merge_step_overrides(pipeline.config.steps, merged["steps"])
    merged["config_path"] = str(path)
    return merged


def reapply_recorded(
    pipeline: Pipeline[Any], recorded: dict[str, Any], *, what: str, name: str | None = None
) -> Pipeline[Any]:
    """``pipeline`` configured exactly as ``recorded`` says (a run's or a snapshot's
    configuration, see ``_config.recorded_options``): resume and snapshots both come here.

    The recorded values go through the config file schema; every recorded option replaces
    the pipeline's (a mapping is not merged with what the code sets now, an option recorded
    as unset is unset). ``config_path`` is kept as a record: the file is not read again.
    Anything that cannot be re-applied is a :class:`ConfigError` naming ``what``.
    """
    unrecorded = recorded.get("unrecorded") or []
    if unrecorded:
        raise ConfigError([
            (key, f"{what} was configured with a value that cannot be stored as JSON, so it cannot "
                  "be re-applied; configure it in the pipeline's code, or with JSON values")
            for key in unrecorded
        ])
    data = {k: recorded[k] for k in RECORDED_OPTIONS if recorded.get(k) is not None}
    try:
        options = validate_config(data).options()
    except ConfigError as exc:
        raise ConfigError([(key, f"{problem} (as recorded by {what})") for key, problem in exc.problems]) from None
    for key in RECORDED_OPTIONS:
        if key in recorded and recorded[key] is None:
            options[key] = None
    options["config_path"] = recorded.get("config_path")
    if name is not None:
        options["name"] = name
    return type(pipeline)(pipeline.func, dataclasses.replace(pipeline.config, **normalise(options)))


def apply_config_file(pipeline: Pipeline[Any], path: str | Path, **overrides: Any) -> Pipeline[Any]:
    """``pipeline`` configured from the YAML file at ``path`` (what ``unspool run --config`` does).

    Keyword arguments win over the file, exactly as in ``with_options(config_path=..., ...)``.
    """
    return pipeline.with_options(config_path=str(path), **overrides)


def check_against_pipeline(
    options: dict[str, Any],
    *,
    pipeline: Pipeline[Any],
    dynamic: bool,
    depends_on: tuple[Any, ...],
    file: str | None,
) -> None:
    """Check ``parameters`` and (dynamic pipelines) ``steps`` against the pipeline's code."""
    problems: list[tuple[str, str]] = []
    signature = pipeline.signature
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    if not accepts_any:
        known = [n for n, p in signature.parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        for name in options.get("parameters") or {}:
            if name not in known:
                problems.append(
                    (f"parameters.{name}", f"pipeline {pipeline.name!r} has no parameter {name!r}; "
                     f"expected one of: {', '.join(known) or '(it takes none)'}")
                )
    if dynamic:
        allowed = {s.name: s for s in depends_on}
        for name, overrides in (options.get("steps") or {}).items():
            step = allowed.get(name)
            if step is None:
                listed = ", ".join(sorted(allowed)) or "nothing"
                problems.append(
                    (f"steps.{name}", f"step {name!r} is not in depends_on of dynamic pipeline "
                     f"{pipeline.name!r} (it lists {listed}); expected one of those steps, or add "
                     f"{name} to @pipeline(dynamic=True, depends_on=[...])")
                )
            else:
                problems.extend(_step_parameter_problems(step, overrides))
    if problems:
        raise ConfigError(problems, file=file)


__all__ = ["check_compiled_steps"]  # defined in _config.py, re-exported for callers of this module
