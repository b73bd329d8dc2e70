"""``@step``: a plain function plus the configuration unspool needs to track it.

Calling a step inside a running pipeline body hands the call to the current run (see
``_context.py`` and ``_engine.py``); calling it anywhere else just calls the function, which keeps steps
unit-testable. Outputs are read from the return annotation once, on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Literal, TypeVar, overload

from ._context import BodyRun, current_run
from ._errors import PipelineError, StepDefinitionError, StepOutputError
from ._types import EncodedJSON

F = TypeVar("F", bound=Callable[..., Any])
Runtime = Literal["inline", "isolated"]


@dataclass(frozen=True)
class ArtifactConfig:
    """Name, tags and metadata of one step output, used inside ``Annotated[T, ...]``.

    ``name`` may contain ``{placeholders}`` filled from the step's, pipeline's or run's
    ``substitutions``, plus the built-ins ``{date}`` and ``{time}``.
    """

    name: str | None = None
    tags: list[str] | None = None
    run_metadata: dict[str, Any] | None = None
    artifact_type: str | None = None


@dataclass(frozen=True)
class StepRetryConfig:
    """Retry a failed step ``max_retries`` times, waiting ``delay * backoff**(n-1)`` seconds."""

    max_retries: int = 1
    delay: float = 0.0
    backoff: float = 1.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.delay < 0 or self.backoff <= 0:
            raise ValueError(
                "StepRetryConfig needs max_retries >= 0, delay >= 0 and backoff > 0, got "
                f"{self.max_retries=}, {self.delay=}, {self.backoff=}"
            )


@dataclass(frozen=True)
class OutputSpec:
    name: str
    annotation: Any
    artifact_name: str | None  # template, None = "<pipeline>::<step>::<output>"
    tags: tuple[str, ...] = ()
    run_metadata: dict[str, Any] | None = None
    artifact_type: str | None = None


_UNSET: Any = object()


@dataclass(frozen=True)
class StepConfig:
    """Everything that can be set by ``@step(...)``, ``with_options`` or a config file."""

    name: str
    enable_cache: bool | None = None
    runtime: Runtime | None = None
    substitutions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    output_materializers: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    retry: StepRetryConfig | None = None
    on_failure: Callable[..., Any] | None = None
    on_success: Callable[..., Any] | None = None
    timeout: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    cache_policy: Any = None  # a CachePolicy (see _cache_keys)

    def recorded(self) -> dict[str, Any]:
        """The JSON form stored on each step run (computed and encoded once per config)."""
        cached = self.__dict__.get("_recorded")
        if cached is None:
            cached = EncodedJSON(self._record())
            object.__setattr__(self, "_recorded", cached)
        return cached

    def _record(self) -> dict[str, Any]:
        return {
            "enable_cache": self.enable_cache,
            "runtime": self.runtime or "inline",
            "substitutions": dict(self.substitutions),
            "settings": _jsonable(self.settings),
            "extra": _jsonable(self.extra),
            "retry": dataclasses.asdict(self.retry) if self.retry else None,
            "timeout": self.timeout,
            "output_materializers": _materializer_names(self.output_materializers),
            **({"cache_policy": self.cache_policy.recorded()} if self.cache_policy is not None else {}),
        }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _materializer_names(spec: Any) -> Any:
    if spec is None:
        return None
    if isinstance(spec, dict):
        return {k: f"{v.__module__}:{v.__qualname__}" for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [f"{v.__module__}:{v.__qualname__}" for v in spec]
    return f"{spec.__module__}:{spec.__qualname__}"


class Step(Generic[F]):
    """A function decorated with ``@step``. See the module docstring."""

    def __init__(self, func: F, config: StepConfig) -> None:
        if not callable(func):
            raise StepDefinitionError(f"@step needs a function, got {func!r}")
        self.func = func
        self.config = config
        functools.update_wrapper(self, func)  # type: ignore[arg-type]
        self._outputs: tuple[OutputSpec, ...] | None = None
        self._signature: inspect.Signature | None = None

    # -- introspection -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def signature(self) -> inspect.Signature:
        if self._signature is None:
            self._signature = inspect.signature(self.func)
        return self._signature

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        if self._outputs is None:
            self._outputs = parse_outputs(self.func, self.name)
        return self._outputs

    def __repr__(self) -> str:
        return f"<step {self.name}>"

    # -- configuration ---------------------------------------------------------------------
    def with_options(self, **overrides: Any) -> Step[F]:
        """A copy of this step with some options changed (same names as ``@step``)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(StepConfig)}
        if unknown:
            raise StepDefinitionError(
                f"with_options() of step {self.name!r} got unknown option(s) {sorted(unknown)}; "
                f"valid options are {sorted(f.name for f in dataclasses.fields(StepConfig))}"
            )
        merged: dict[str, Any] = {}
        for key, value in overrides.items():
            current = getattr(self.config, key)
            if key in ("settings", "extra", "substitutions", "parameters") and value is not None:
                value = {**current, **value}
            merged[key] = value
        _validate_config(merged)
        if "name" in merged:
            _check_name_length(merged["name"])
        clone = Step(self.func, dataclasses.replace(self.config, **merged))
        clone._outputs = self._outputs if "name" not in merged else None
        clone._signature = self._signature
        return clone

    # -- calling -------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run = current_run()
        if run is None:
            return self.func(*args, **kwargs)
        return run.call_step(self, args, kwargs, mode="sync")

    def entrypoint(self, *args: Any, **kwargs: Any) -> Any:
        """Call the plain function, never the engine."""
        return self.func(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Start the step concurrently; returns a :class:`StepRunFuture`."""
        return self._engine_run("submit").call_step(self, args, kwargs, mode="submit")

    def map(self, *args: Any, **kwargs: Any) -> Any:
        """One invocation per element of the sequence inputs (zipped, equal lengths)."""
        run = self._engine_run("map")
        return _announce(run, self, run.map_step(self, args, kwargs, product=False))

    def product(self, *args: Any, **kwargs: Any) -> Any:
        """One invocation per combination of the sequence inputs (cartesian product)."""
        run = self._engine_run("product")
        return _announce(run, self, run.map_step(self, args, kwargs, product=True))

    def _engine_run(self, what: str) -> BodyRun:
        run = current_run()
        if run is None:
            raise PipelineError(
                f"{self.name}.{what}() can only be used inside a running pipeline body "
                "(a function decorated with @pipeline)"
            )
        return run


def _announce(run: Any, step: Step[Any], result: Any) -> Any:
    """Tell listeners (the console) which invocations one map/product call made."""
    from ._events import Event, events
    from ._types import ExecutionStatus

    if events.active:
        events.emit(Event("map", run.id, ExecutionStatus.RUNNING, step_name=step.name,
                          members=tuple(f.invocation_id for f in result)))
    return result


def _validate_config(options: dict[str, Any]) -> None:
    runtime = options.get("runtime")
    if runtime is not None and runtime not in ("inline", "isolated"):
        raise StepDefinitionError(f"runtime must be 'inline' or 'isolated', got {runtime!r}")
    retry = options.get("retry")
    if retry is not None and not isinstance(retry, StepRetryConfig):
        if isinstance(retry, dict):
            options["retry"] = StepRetryConfig(**retry)
        else:
            raise StepDefinitionError(f"retry must be a StepRetryConfig, got {retry!r}")
    materializers = options.get("output_materializers")
    if materializers is not None:
        from ._materializers import BaseMaterializer  # lazy: keeps `import unspool` light (fsspec)

        if isinstance(materializers, dict):
            given = list(materializers.values())
        else:
            given = list(materializers) if isinstance(materializers, (list, tuple)) else [materializers]
        for m in given:
            if not (isinstance(m, type) and issubclass(m, BaseMaterializer)):
                raise StepDefinitionError(
                    "output_materializers takes BaseMaterializer subclasses (one, a list in output "
                    f"order, or a dict by output name), got {m!r}"
                )
    policy = options.get("cache_policy")
    if policy is not None:
        from ._cache_keys import CachePolicy

        if isinstance(policy, dict):
            options["cache_policy"] = policy = CachePolicy(**policy)
        if not isinstance(policy, CachePolicy):
            raise StepDefinitionError(f"cache_policy must be a CachePolicy, got {policy!r}")
    timeout = options.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise StepDefinitionError(f"timeout must be a positive number of seconds, got {timeout!r}")
    for key in ("settings", "extra", "substitutions", "parameters"):
        if key in options and options[key] is not None and not isinstance(options[key], dict):
            raise StepDefinitionError(f"{key} must be a dict, got {type(options[key]).__name__}")
        if key in options and options[key] is None:
            options[key] = {}


@overload
def step(func: F, /) -> Step[F]: ...


@overload
def step(
    *,
    name: str | None = None,
    enable_cache: bool | None = None,
    runtime: Runtime | None = None,
    substitutions: dict[str, str] | None = None,
    settings: dict[str, Any] | None = None,
    output_materializers: Any = None,
    extra: dict[str, Any] | None = None,
    retry: StepRetryConfig | None = None,
    on_failure: Callable[..., Any] | None = None,
    on_success: Callable[..., Any] | None = None,
    timeout: float | None = None,
    cache_policy: Any = None,
) -> Callable[[F], Step[F]]: ...


def step(func: Any = None, /, **options: Any) -> Any:
    """Turn a function into a tracked pipeline step. Usable bare or with options."""

    def wrap(f: F) -> Step[F]:
        if isinstance(f, Step):
            raise StepDefinitionError(f"{f.name} is already a step; decorate it with @step once")
        opts = dict(options)
        name = opts.pop("name", None) or f.__name__
        unknown = set(opts) - {x.name for x in dataclasses.fields(StepConfig)}
        if unknown:
            raise StepDefinitionError(f"@step got unknown option(s) {sorted(unknown)}")
        _validate_config(opts)
        _check_definition(f, name)
        return Step(f, StepConfig(name=name, **opts))

    if func is not None:
        return wrap(func)
    return wrap


# The metadata store keeps names of up to 255 characters; a step's invocation ids add a suffix
# (``_2``, ``_10000``...). Names never become file names as they are, so no filesystem limit applies.
MAX_STEP_NAME = 245
MAX_OUTPUT_NAME = 255


def _check_name_length(name: str, output: str | None = None) -> None:
    what, value, limit = ("output name", output, MAX_OUTPUT_NAME) if output is not None else (
        "step name", name, MAX_STEP_NAME)
    if len(value) > limit:
        raise StepDefinitionError(
            f"{what} {value[:30]!r}... is {len(value)} characters long; the metadata store keeps names of up "
            f"to 255 characters, so a {what} may have at most {limit}: use a shorter name"
        )


def _check_definition(func: Callable[..., Any], name: str) -> None:
    """What makes a function unusable as a step, said when it is decorated."""
    _check_name_length(name)
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    if positional:
        names = ", ".join(repr(n) for n in positional)
        raise StepDefinitionError(
            f"step {name!r} has positional-only parameter(s) {names} (declared before '/'); unspool "
            "passes step inputs and parameters by name, so remove the '/' from its signature"
        )


def _check_placeholders(template: str, step_name: str) -> None:
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise StepDefinitionError(
            f"artifact name {template!r} of step {step_name!r} is not a valid name template ({exc}); "
            "write placeholders as {suffix} and literal braces as {{ and }}"
        ) from None
    for field_name in fields:
        if not field_name.isidentifier():
            raise StepDefinitionError(
                f"artifact name {template!r} of step {step_name!r} has the placeholder {{{field_name}}}; "
                "placeholders are names, e.g. {suffix}, filled from substitutions (or write {{ }} for braces)"
            )


# -- outputs from annotations ----------------------------------------------------------------

def parse_outputs(func: Callable[..., Any], step_name: str) -> tuple[OutputSpec, ...]:
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # unresolved forward reference and the like
        raise StepDefinitionError(
            f"cannot read the type annotations of step {step_name!r}: {exc}"
        ) from exc
    if "return" not in hints:
        return (OutputSpec("output", Any, None),)
    annotation = hints["return"]
    if annotation is None or annotation is type(None):
        return ()
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _checked((_annotated_output(annotation, "output", step_name),), step_name)
    if origin is tuple:
        items = typing.get_args(annotation)
        if not items or (len(items) == 2 and items[1] is Ellipsis):
            return (OutputSpec("output", annotation, None),)
        specs = [_annotated_output(item, f"output_{i}", step_name) for i, item in enumerate(items)]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise StepDefinitionError(f"step {step_name!r} has duplicate output names {names}")
        return _checked(tuple(specs), step_name)
    return (OutputSpec("output", annotation, None),)


def _checked(specs: tuple[OutputSpec, ...], step_name: str) -> tuple[OutputSpec, ...]:
    for spec in specs:
        _check_name_length(step_name, spec.name)
        if spec.artifact_name and "{" in spec.artifact_name:
            _check_placeholders(spec.artifact_name, step_name)
    return specs


def _annotated_output(annotation: Any, default_name: str, step_name: str) -> OutputSpec:
    if typing.get_origin(annotation) is not typing.Annotated:
        return OutputSpec(default_name, annotation, None)
    base, *extras = typing.get_args(annotation)
    for extra in extras:
        if isinstance(extra, str):
            return OutputSpec(extra, base, extra)
        if isinstance(extra, ArtifactConfig):
            name = extra.name or default_name
            return OutputSpec(
                name, base, extra.name, tuple(extra.tags or ()), extra.run_metadata, extra.artifact_type
            )
    raise StepDefinitionError(
        f"step {step_name!r}: Annotated output needs a name string or an ArtifactConfig, got {extras}"
    )


def split_outputs(step_name: str, specs: tuple[OutputSpec, ...], value: Any) -> dict[str, Any]:
    """Map a step's return value onto its declared outputs, with clear errors."""
    if not specs:
        if value is not None:
            raise StepOutputError(
                f"step {step_name!r} is annotated to return None but returned a "
                f"{type(value).__name__}; annotate its return type to store it as an artifact"
            )
        return {}
    if len(specs) == 1:
        values = [value]
    else:
        if not isinstance(value, (tuple, list)) or len(value) != len(specs):
            got = f"{len(value)} values" if isinstance(value, (tuple, list)) else f"a {type(value).__name__}"
            raise StepOutputError(
                f"step {step_name!r} declares {len(specs)} outputs "
                f"({', '.join(s.name for s in specs)}) but returned {got}"
            )
        values = list(value)
    out: dict[str, Any] = {}
    for spec, item in zip(specs, values):
        _check_type(step_name, spec, item)
        out[spec.name] = item
    return out


def _check_type(step_name: str, spec: OutputSpec, value: Any) -> None:
    expected = spec.annotation
    if expected is Any or isinstance(expected, TypeVar):
        return
    origin = typing.get_origin(expected)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        options = typing.get_args(expected)
    else:
        options = (expected,)
    for option in options:
        if option is Any or option is None and value is None or option is type(None) and value is None:
            return
        klass = typing.get_origin(option) or option
        if klass is typing.Annotated:
            klass = typing.get_args(option)[0]
        if not isinstance(klass, type):
            return  # Literal, NewType, protocols...: not checked
        if typing.is_typeddict(klass):
            klass = dict  # a TypedDict is a dict at run time; isinstance() refuses it
        if isinstance(value, klass):
            return
        if klass is float and isinstance(value, int) and not isinstance(value, bool):
            return
    raise StepOutputError(
        f"step {step_name!r} output {spec.name!r} is annotated as {_type_name(expected)} but the "
        f"step returned a {type(value).__name__}"
    )


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)
