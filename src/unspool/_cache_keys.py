"""Cache keys: when are two step invocations the same work?

The key of an invocation covers

* the step's code: the source of its function, the immutable values its closure captured (a step made
  by a factory, ``make(3)``, differs from ``make(2)``) and its default values;
* its parameters, encoded with their types (``(1, 2)`` differs from ``[1, 2]``, ``{1: "a"}``
  from ``{"1": "a"}``, ``1`` from ``1.0`` and ``True``);
* the content (not the identity) of its input artifacts, element indexes included;
* its output configuration: output names, artifact names after substitution, materializers;
* what the user adds with :class:`CachePolicy`: the source of other functions or modules
  (``source_dependencies``) and the string a ``cache_func`` returns.

It does *not* cover helper functions the step calls, module-level constants, files or
services the step reads, or installed package versions: name them in
``CachePolicy(source_dependencies=[...])`` or return a version from ``cache_func``, or turn
the cache off for the step (``enable_cache=False``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import importlib
import inspect
import pathlib
import re
import sys
import types
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ._errors import StepDefinitionError

if TYPE_CHECKING:
    from ._step import Step


@dataclass(frozen=True)
class CachePolicy:
    """What the cache key of a step covers (``@step(cache_policy=CachePolicy(...))``).

    ``source_dependencies``: functions, classes or modules (or ``"module:name"`` strings)
    whose source is part of the key, so editing a helper invalidates the step's cache.
    ``cache_func``: called with no arguments each time the key is computed; its return value
    (e.g. a data version or a file's modification time) is part of the key.
    ``include_step_code`` / ``include_step_parameters`` / ``include_artifact_values``: leave
    that part out of the key; ``ignored_inputs``: parameters or inputs left out by name.
    """

    include_step_code: bool = True
    include_step_parameters: bool = True
    include_artifact_values: bool = True
    ignored_inputs: tuple[str, ...] | list[str] | None = None
    source_dependencies: tuple[Any, ...] | list[Any] | None = None
    cache_func: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        if self.cache_func is not None and not callable(self.cache_func):
            raise StepDefinitionError(
                f"CachePolicy(cache_func=...) takes a function with no arguments, got {self.cache_func!r}"
            )
        for dep in self.source_dependencies or ():
            if not (isinstance(dep, (str, types.ModuleType, type)) or callable(dep)):
                raise StepDefinitionError(
                    "CachePolicy(source_dependencies=[...]) takes functions, classes, modules or "
                    f"'module:name' strings, got {dep!r}"
                )

    def recorded(self) -> dict[str, Any]:
        return {
            "include_step_code": self.include_step_code,
            "include_step_parameters": self.include_step_parameters,
            "include_artifact_values": self.include_artifact_values,
            "ignored_inputs": list(self.ignored_inputs or ()),
            "source_dependencies": [_dependency_name(d) for d in self.source_dependencies or ()],
            "cache_func": None if self.cache_func is None else _dependency_name(self.cache_func),
        }


# -- source ---------------------------------------------------------------------------------------------

_source_hashes: dict[Any, str] = {}


def source_hash(obj: Any) -> str:
    """Hash of a function's (class's, module's) source; its bytecode when there is no source."""
    key = getattr(obj, "__code__", obj)
    try:
        cached = _source_hashes.get(key)
    except TypeError:  # unhashable
        cached, key = None, None
    if cached is None:
        try:
            text = inspect.getsource(obj).encode()
        except (OSError, TypeError):
            code = getattr(obj, "__code__", None)
            text = (code.co_code + repr(code.co_consts).encode()) if code else repr(obj).encode()
        cached = hashlib.sha256(text).hexdigest()
        if key is not None:
            _source_hashes[key] = cached
    return cached


def _dependency_name(dep: Any) -> str:
    if isinstance(dep, str):
        return dep
    if isinstance(dep, types.ModuleType):
        return dep.__name__
    return f"{getattr(dep, '__module__', '?')}:{getattr(dep, '__qualname__', repr(dep))}"


def _current(dep: Any) -> Any:
    """The object a dependency names *now* (a reloaded module's new function, not the old one)."""
    if isinstance(dep, str):
        module_name, _, attr = dep.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
        except Exception as exc:
            raise StepDefinitionError(
                f"CachePolicy source dependency {dep!r} cannot be found ({exc}); write it as "
                "'package.module' or 'package.module:name'"
            ) from None
        return obj
    if isinstance(dep, types.ModuleType):
        return sys.modules.get(dep.__name__, dep)
    module = sys.modules.get(getattr(dep, "__module__", "") or "")
    obj = module
    for part in (getattr(dep, "__qualname__", "") or "").split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return dep
    return obj


def _dependency_hash(dep: Any) -> str:
    obj = _current(dep)
    if isinstance(obj, types.ModuleType):
        try:
            return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()
        except (OSError, TypeError):
            return obj.__name__
    code = getattr(obj, "__code__", None)
    if code is not None:
        _source_hashes.pop(code, None)  # the file may have changed since it was first read
    return source_hash(obj)


# -- typed encoding ---------------------------------------------------------------------------------------

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 12


def encode(value: Any) -> bytes:
    """A canonical, typed byte encoding of a value (equal values of equal types, equal bytes)."""
    out: list[str] = []
    _encode(value, out, 0, set())
    return "".join(out).encode("utf-8", "surrogatepass")


def _type_path(t: type) -> str:
    return f"{t.__module__}:{t.__qualname__}"


def _encode(value: Any, out: list[str], depth: int, seen: set[int]) -> None:  # noqa: C901 - a type switch
    if depth > _MAX_DEPTH:
        out.append("…")
        return
    t = type(value)
    if value is None:
        out.append("N")
    elif t is bool:
        out.append("b1" if value else "b0")
    elif t is int:
        out.append(f"i{value};")
    elif t is float:
        out.append(f"f{value!r};")
    elif t is str:
        out.append(f"s{len(value)}:{value}")
    elif t in (bytes, bytearray):
        out.append(f"y{hashlib.sha256(bytes(value)).hexdigest()}")
    elif isinstance(value, enum.Enum):
        out.append(f"e{_type_path(t)}:")
        _encode(value.value, out, depth + 1, seen)
    elif t in (list, tuple) or isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        if id(value) in seen:
            out.append("@")
            return
        seen.add(id(value))
        out.append(("l" if isinstance(value, list) else "t") + ("" if t in (list, tuple) else _type_path(t)) + "[")
        for item in value:
            _encode(item, out, depth + 1, seen)
            out.append(",")
        out.append("]")
        seen.discard(id(value))
    elif isinstance(value, (set, frozenset)):
        parts = sorted(encode(item) for item in value)
        out.append(("S" if isinstance(value, set) else "F") + "[" + ",".join(p.decode() for p in parts) + "]")
    elif isinstance(value, dict):
        if id(value) in seen:
            out.append("@")
            return
        seen.add(id(value))
        items = sorted(((encode(k), v) for k, v in value.items()), key=lambda kv: kv[0])
        out.append("d" + ("" if t is dict else _type_path(t)) + "{")
        for k, v in items:
            out.append(k.decode())
            out.append("=")
            _encode(v, out, depth + 1, seen)
            out.append(",")
        out.append("}")
        seen.discard(id(value))
    elif isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        out.append(f"T{_type_path(t)}:{value.isoformat()};")
    elif isinstance(value, (_dt.timedelta, uuid.UUID, pathlib.PurePath, decimal.Decimal, complex)):
        out.append(f"v{_type_path(t)}:{value!s};")
    elif hasattr(value, "_fields") and isinstance(value, tuple):  # namedtuple
        out.append(f"n{_type_path(t)}")
        _encode(tuple(value), out, depth + 1, seen)
    elif _is_pydantic(value):
        out.append(f"p{_type_path(t)}")
        _encode(value.model_dump(mode="python"), out, depth + 1, seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        out.append(f"D{_type_path(t)}")
        _encode({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, out, depth + 1, seen)
    elif isinstance(value, (types.FunctionType, types.MethodType)) or hasattr(value, "__code__"):
        out.append("φ")
        _function(value, out, depth + 1, seen)
    elif _is_step(value):
        out.append("σ")
        _function(value.func, out, depth + 1, seen)
    elif isinstance(value, type):
        out.append(f"C{_type_path(value)};")
    elif isinstance(value, types.ModuleType):
        out.append(f"M{value.__name__};")
    elif t.__module__ == "numpy" and hasattr(value, "tobytes") and hasattr(value, "dtype"):
        out.append(f"a{value.dtype}:{getattr(value, 'shape', '')}:{hashlib.sha256(value.tobytes()).hexdigest()};")
    else:
        out.append(f"o{_type_path(t)}:{_opaque(value)};")


def _is_pydantic(value: Any) -> bool:
    return hasattr(value, "model_dump") and hasattr(type(value), "model_fields")


def _is_step(value: Any) -> bool:
    # By its class's module, not isinstance: the step module imports this one.
    return any(cls.__module__ == "unspool._step" and cls.__name__ == "Step" for cls in type(value).__mro__)


def _opaque(value: Any) -> str:
    """Any other object: the hash of its pickle, else its repr without memory addresses."""
    try:
        import cloudpickle

        return hashlib.sha256(cloudpickle.dumps(value)).hexdigest()
    except Exception:
        return _ADDRESS.sub("", repr(value))


def _function(func: Any, out: list[str], depth: int, seen: set[int]) -> None:
    """A function: its source, its defaults and what its closure captured."""
    func = getattr(func, "__func__", func)  # a bound method: its function
    if id(func) in seen:
        out.append("@")
        return
    seen.add(id(func))
    out.append(source_hash(func))
    defaults = getattr(func, "__defaults__", None)
    if defaults:
        out.append("|defaults:")
        for value in defaults:
            _captured(value, out, depth, seen)
    kwdefaults = getattr(func, "__kwdefaults__", None)
    if kwdefaults:
        out.append("|kwdefaults:")
        for name in sorted(kwdefaults):
            out.append(f"{name}=")
            _captured(kwdefaults[name], out, depth, seen)
    closure = getattr(func, "__closure__", None)
    if closure:
        names = func.__code__.co_freevars
        for name, cell in zip(names, closure):
            out.append(f"|{name}=")
            try:
                contents = cell.cell_contents
            except ValueError:  # not assigned yet
                out.append("<empty>")
                continue
            _captured(contents, out, depth, seen)
    seen.discard(id(func))


def _immutable(value: Any, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if value is None or type(value) in (bool, int, float, str, bytes, complex):
        return True
    if isinstance(value, (enum.Enum, _dt.date, _dt.time, _dt.timedelta, uuid.UUID, pathlib.PurePath,
                          decimal.Decimal, type, types.ModuleType)):
        return True
    if type(value) in (tuple, frozenset) or hasattr(value, "_fields") and isinstance(value, tuple):
        return all(_immutable(v, depth + 1) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        params = getattr(type(value), "__dataclass_params__", None)
        return bool(params and params.frozen) and all(
            _immutable(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value))
    if _is_pydantic(value):
        return bool(type(value).model_config.get("frozen")) and all(
            _immutable(v, depth + 1) for v in value.__dict__.values())
    return False


def _captured(value: Any, out: list[str], depth: int, seen: set[int]) -> None:
    """A value a function captured (closure, default): immutable values are part of the key;
    mutable ones (lists, dicts, objects) only by type, since a step may change them as it runs."""
    if isinstance(value, (types.FunctionType, types.MethodType)) or _is_step(value) or _immutable(value):
        _encode(value, out, depth + 1, seen)
    else:
        out.append(f"m{_type_path(type(value))};")


def function_fingerprint(func: Callable[..., Any]) -> str:
    """Source + defaults + closure values of a step function (cached when it has neither)."""
    if not getattr(func, "__closure__", None) and not getattr(func, "__defaults__", None) \
            and not getattr(func, "__kwdefaults__", None):
        return source_hash(func)
    out: list[str] = []
    _function(func, out, 0, set())
    return hashlib.sha256("".join(out).encode("utf-8", "surrogatepass")).hexdigest()


# -- the key ----------------------------------------------------------------------------------------------

def step_cache_key(
    step: Step[Any],
    params: dict[str, Any],
    inputs: Iterable[tuple[str, int, str, int | None]],
    outputs: list[tuple[str, str]],
    materializers: Any,
) -> str:
    """The cache key of one invocation.

    ``inputs``: (input name, position in a list input, content hash, element index);
    ``outputs``: (output name, artifact name after substitution).
    """
    policy: CachePolicy | None = step.config.cache_policy
    ignored = set(policy.ignored_inputs or ()) if policy else set()
    h = hashlib.sha256(b"unspool-cache-key-2")
    if policy is None or policy.include_step_code:
        h.update(function_fingerprint(step.func).encode())
    if policy is None or policy.include_step_parameters:
        h.update(b"|params:")
        h.update(encode({k: v for k, v in params.items() if k not in ignored}))
    if policy is None or policy.include_artifact_values:
        for name, pos, content_hash, index in inputs:
            if name not in ignored:
                h.update(f"|{name}:{pos}:{content_hash}:{index}".encode())
    for name, artifact_name in outputs:
        h.update(f"|out:{name}:{artifact_name}".encode())
    h.update(repr(materializers).encode())
    if policy is not None:
        for dep in policy.source_dependencies or ():
            h.update(f"|dep:{_dependency_name(dep)}:{_dependency_hash(dep)}".encode())
        if policy.cache_func is not None:
            try:
                extra = policy.cache_func()
            except Exception as exc:
                raise StepDefinitionError(
                    f"the cache_func of step {step.name!r} raised {type(exc).__name__}: {exc}; it is "
                    "called with no arguments to compute the cache key"
                ) from exc
            h.update(b"|user:")
            h.update(encode(extra))
    return h.hexdigest()
