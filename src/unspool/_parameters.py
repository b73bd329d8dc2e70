"""Step and pipeline parameters: which values they may hold, and where they come from.

* **Types.** A parameter may be anything ZenML accepts: JSON values, tuples and sets,
  pydantic models, enums, dates, datetimes, times, timedeltas, UUIDs, paths, decimals and
  dataclasses of those. It is recorded in the metadata store in its JSON form and reaches
  the step as the type its annotation names: a value that came back as JSON (from a config
  file, ``--param``, a snapshot trigger or a resume) is converted into the annotated type
  (``"2024-01-31"`` into a ``date``, a dict into a pydantic model, a list into a tuple). A
  value that does not convert is a one-line :class:`StepInputError`.
* **Configured parameters** (``steps.<step>.parameters`` in a config file, or
  ``with_options(parameters=...)``) fill the parameters the code leaves out. A configured
  value that differs from the one the code passes is a :class:`ConfigError` naming the step,
  the parameter and both values, as in ZenML.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as _dt
import decimal
import enum
import functools
import inspect
import pathlib
import typing
import uuid
from typing import Any, Callable

from ._errors import ConfigError, StepInputError

# -- configured parameters ------------------------------------------------------------------------------


def with_configured(step: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus the configured parameters the call leaves out; a conflict is an error."""
    configured = {k: v for k, v in step.config.parameters.items() if k in step.signature.parameters}
    if not configured:
        return kwargs
    try:
        passed = step.signature.bind_partial(*args, **kwargs).arguments
    except TypeError:
        passed = dict(kwargs)  # the call itself is wrong: binding reports it
    merged = dict(kwargs)
    for name, value in configured.items():
        if name not in passed:
            merged[name] = value
            continue
        given = passed[name]
        if not _same(given, value):
            raise ConfigError([(
                f"steps.{step.name}.parameters.{name}",
                f"step {step.name!r} parameter {name!r} is configured as {value!r} but the pipeline code "
                f"passes {_shown(given)}; remove one of them or make them equal",
            )])
    return merged


def _same(given: Any, configured: Any) -> bool:
    try:
        if given == configured:
            return True
    except Exception:
        return False
    return _jsonable(given) == _jsonable(configured)


def _shown(value: Any) -> str:
    if hasattr(value, "invocation_id") or hasattr(value, "_inv"):
        return f"an artifact ({value!r})"
    return repr(value)


# -- allowed values ---------------------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None), _dt.date, _dt.time, _dt.timedelta, uuid.UUID,
            pathlib.PurePath, decimal.Decimal, enum.Enum)


def _allowed(value: Any, depth: int = 0) -> bool:
    if depth > 50:
        return False
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_allowed(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int, float, bool, enum.Enum)) and _allowed(v, depth + 1) for k, v in value.items())
    if hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):  # pydantic
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_allowed(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value))
    return False


def is_mappable(value: Any) -> bool:
    """What ``step.map``/``product`` iterate over when given plain values."""
    return isinstance(value, (list, tuple, range, set, frozenset, collections.abc.Iterator))


def check_values(owner: str, values: dict[str, Any], is_artifact: Callable[[Any], bool] | None = None) -> None:
    """Every parameter must be a value that can be recorded (see the module docstring)."""
    for name, value in values.items():
        if is_artifact is not None and isinstance(value, (list, tuple)):
            artifact_positions = [i for i, v in enumerate(value) if is_artifact(v)]
            if artifact_positions:
                plain = [i for i in range(len(value)) if i not in artifact_positions]
                raise StepInputError(
                    f"input {name!r} of {owner} mixes artifacts and plain values (plain values at "
                    f"positions {plain}); pass a list of artifacts only (produce the plain values in "
                    "a step) or of plain values only"
                )
        if not _allowed(value):
            raise StepInputError(
                f"parameter {name!r} of {owner} is a {type(value).__name__}, which cannot be recorded "
                "as a parameter; pass JSON values, tuples, sets, enums, dates, UUIDs, paths, "
                "dataclasses or pydantic models, or produce the value in a step and pass its output artifact"
            )


def _jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    try:
        return to_jsonable_python(value)
    except Exception:
        return repr(value)


# -- converting into the annotated type ----------------------------------------------------------------------

@functools.lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(annotation)


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        from ._runner import _type_hints

        return _type_hints(getattr(func, "__wrapped__", func) if not hasattr(func, "__code__") else func)
    except Exception:
        return {}


def _needs_conversion(value: Any, annotation: Any) -> bool:
    if annotation is Any or annotation is inspect.Parameter.empty or isinstance(annotation, typing.TypeVar):
        return False
    if isinstance(annotation, str):
        return False  # unresolved forward reference: leave the value alone
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _needs_conversion(value, typing.get_args(annotation)[0])
    if isinstance(annotation, type):
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            return False  # an int is a fine float (PEP 484): keep it as given
        return not isinstance(value, annotation)
    if origin in (list, tuple, set, frozenset, dict, collections.abc.Sequence, collections.abc.Mapping,
                  collections.abc.Set):
        container = {collections.abc.Sequence: (list, tuple), collections.abc.Mapping: dict,
                     collections.abc.Set: (set, frozenset)}.get(origin, origin)
        if not isinstance(value, container):
            return True
        return any(_needs_conversion(v, a) for v, a in _element_pairs(value, annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        options = typing.get_args(annotation)
        return not any(not _needs_conversion(value, option) for option in options)
    if origin is typing.Literal:
        return False
    return False


def _element_pairs(value: Any, annotation: Any) -> list[tuple[Any, Any]]:
    args = typing.get_args(annotation)
    if not args:
        return []
    if isinstance(value, dict):
        if len(args) != 2:
            return []
        return [(k, args[0]) for k in value] + [(v, args[1]) for v in value.values()]
    items = list(value)
    if typing.get_origin(annotation) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return list(zip(items, args)) if len(items) == len(args) else [(value, object)]
    return [(item, args[0]) for item in items]


def convert(owner: str, func: Callable[..., Any], signature: inspect.Signature, params: dict[str, Any],
            where: str = "") -> dict[str, Any]:
    """``params`` with each value converted into its parameter's annotated type where needed."""
    hints: dict[str, Any] | None = None
    out = params
    for name, value in params.items():
        param = signature.parameters.get(name)
        if param is None or param.annotation is inspect.Parameter.empty:
            continue
        annotation = param.annotation
        if isinstance(annotation, str):
            if hints is None:
                hints = _hints(func)
            annotation = hints.get(name, Any)
        if not _needs_conversion(value, annotation):
            continue
        try:
            converted = _adapter(annotation).validate_python(value)
        except Exception as exc:
            reason = _first_error(exc)
            raise StepInputError(
                f"parameter {name!r} of {owner} is annotated {_type_name(annotation)} but got "
                f"{value!r}{where}, which does not convert ({reason}); pass a {_type_name(annotation)}"
            ) from None
        if out is params:
            out = dict(params)
        out[name] = converted
    return out


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            return str(first.get("msg", exc))
        except Exception:
            pass
    return str(exc).splitlines()[0]


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")
