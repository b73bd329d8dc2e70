"""Binding the arguments of a call in a pipeline body: which are parameters (JSON values,
recorded and part of the cache key) and which are artifact inputs (futures, chunks, stored
artifact versions, lists of them), and how ``map``/``product`` spread sequences over
invocations.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import TYPE_CHECKING, Any

from ._errors import StepDefinitionError, StepInputError
from ._futures import (
    ArtifactChunk,
    ArtifactFuture,
    ChildRunFuture,
    MapResultFuture,
    StepRunFuture,
    unmapped,
)
from ._parameters import check_values, convert, is_mappable, with_configured
from ._types import Produced

if TYPE_CHECKING:
    from ._pipeline import Pipeline
    from ._step import Step


def artifact_sources(value: Any) -> tuple[bool, list[tuple[Any, int | None]]] | None:
    """Classify a step argument: artifact input(s) -> (is_list, sources), parameter -> None."""
    if isinstance(value, ArtifactFuture):
        return False, [(value, None)]
    if isinstance(value, StepRunFuture):
        return False, [(value._single(), None)]
    if isinstance(value, ArtifactChunk):
        return False, [(_one_source(value.source), value.index)]
    if isinstance(value, MapResultFuture):
        return True, [(f._single(), None) for f in value.futures]
    if isinstance(value, ChildRunFuture):
        return artifact_sources(value.result())
    if is_stored_artifact(value):
        return False, [(value, None)]
    if isinstance(value, (list, tuple)) and value and all(_is_artifact_like(v) for v in value):
        sources: list[tuple[Any, int | None]] = []
        for item in value:
            _, found = artifact_sources(item)  # type: ignore[misc]
            sources.extend(found)
        return True, sources
    return None


def _one_source(value: Any) -> Any:
    if isinstance(value, StepRunFuture):
        return value._single()
    return value


def is_stored_artifact(value: Any) -> bool:
    return getattr(value, "_unspool_artifact_version", False) is True or isinstance(value, Produced)


def _is_artifact_like(value: Any) -> bool:
    return isinstance(value, (ArtifactFuture, StepRunFuture, ArtifactChunk)) or is_stored_artifact(value)


def bind_parameters(pipeline: Pipeline[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    sig = pipeline.signature
    merged = {**{k: v for k, v in pipeline.config.parameters.items() if k in sig.parameters}, **kwargs}
    unknown = set(pipeline.config.parameters) - set(sig.parameters)
    if unknown:
        raise StepInputError(
            f"pipeline {pipeline.name!r} has no parameter(s) {sorted(unknown)}; its signature is "
            f"{pipeline.name}{sig}"
        )
    try:
        bound = sig.bind(*args, **merged)
    except TypeError as exc:
        raise StepInputError(
            f"pipeline {pipeline.name!r} called with wrong arguments: {exc}. Its signature is {pipeline.name}{sig}"
        ) from None
    bound.apply_defaults()
    params = dict(bound.arguments)
    check_values(f"pipeline {pipeline.name!r}", params, _is_artifact_like)
    return convert(f"pipeline {pipeline.name!r}", pipeline.func, sig, params)


def bind_step(step: Step[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    sig = step.signature
    if step.config.parameters:
        kwargs = with_configured(step, args, kwargs)  # fill what the call leaves out; conflicts fail
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise StepInputError(
            f"step {step.name!r} called with wrong arguments: {exc}. Its signature is "
            f"{step.name}{sig}"
        ) from None
    bound.apply_defaults()
    params: dict[str, Any] = {}
    inputs: dict[str, tuple[bool, list[tuple[Any, int | None]]]] = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise StepDefinitionError(f"step {step.name!r}: *args/**kwargs parameters are not supported")
        sources = artifact_sources(value)
        if sources is None:
            params[name] = value
        else:
            inputs[name] = sources
    check_values(f"step {step.name!r}", params, _is_artifact_like)
    return convert(f"step {step.name!r}", step.func, sig, params), inputs


class _Combinations:
    """The mappings of mapped arguments of a ``map`` call, made one at a time as they are
    iterated: a map over a million elements does not hold a million of them at once."""

    __slots__ = ("mapped", "count")

    def __init__(self, mapped: dict[str, Sequence[Any]], count: int) -> None:
        self.mapped = mapped
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        mapped = self.mapped
        for i in range(self.count):
            yield {name: items[i] for name, items in mapped.items()}


class _Chunks(Sequence[ArtifactChunk]):
    """Element ``i`` of an artifact, for every ``i``, made when asked for."""

    def __init__(self, source: Any, count: int) -> None:
        self.source = source
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [ArtifactChunk(self.source, i) for i in range(*index.indices(self.count))]
        if not -self.count <= index < self.count:
            raise IndexError(index)
        return ArtifactChunk(self.source, index % self.count)


def bind_like(first: tuple[dict[str, Any], dict[str, Any]] | None, combo: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The binding of one more element of a map whose first element bound every mapped
    argument as an artifact input: the same parameters (shared: they come from the fixed
    arguments and defaults alone) and the first one's inputs with this element's. None
    when an argument binds differently (then it is bound in full). Binding a signature per
    element was most of the cost of a map's set-up, and its copies most of its memory."""
    if first is None:
        return None
    params, inputs = first
    mine = dict(inputs)
    for name, value in combo.items():
        if name not in inputs:
            return None
        sources = artifact_sources(value)
        if sources is None:
            return None
        mine[name] = sources
    return params, mine


def bind_each(step: Step[Any], fixed: dict[str, Any], combos: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(params, inputs)`` of each invocation of a map, in order (see :func:`bind_like`)."""
    first: tuple[dict[str, Any], dict[str, Any]] | None = None
    for combo in combos:
        bound = bind_like(first, combo)
        if bound is None:
            bound = bind_step(step, (), {**fixed, **combo})
            first = first or bound
        yield bound


def map_combinations(step: Step[Any], args: tuple[Any, ...], kwargs: dict[str, Any], product: bool) -> tuple[dict[str, Any], Sized | list[dict[str, Any]]]:
    """``(fixed, combinations)`` of a ``map``/``product`` call: the arguments passed whole, and
    one mapping of the mapped arguments per invocation to make (iterable, with a length)."""
    try:
        bound = step.signature.bind_partial(*args, **kwargs)
    except TypeError as exc:
        raise StepInputError(f"step {step.name!r} cannot be mapped with these arguments: {exc}") from None
    mapped: dict[str, Sequence[Any]] = {}
    fixed: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if isinstance(value, unmapped):
            fixed[name] = value.value
            continue
        items = sequence_items(step.name, name, value)
        if items is None:
            fixed[name] = value
        else:
            mapped[name] = items
    if not mapped:
        raise StepInputError(
            f"{step.name}.{'product' if product else 'map'}() got no sequence input to map over; "
            "pass a list-like artifact, a list of artifacts, a map result or a list"
        )
    if product:
        return fixed, [dict(zip(mapped, values)) for values in itertools.product(*mapped.values())]
    lengths = {name: len(items) for name, items in mapped.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{n}={length}" for n, length in lengths.items())
        raise StepInputError(
            f"{step.name}.map() needs mapped inputs of equal length, got {detail}; use "
            ".product() for all combinations or unmapped(...) to pass an input whole"
        )
    return fixed, _Combinations(mapped, next(iter(lengths.values())))


def sequence_items(step_name: str, arg: str, value: Any) -> Sequence[Any] | None:
    if isinstance(value, MapResultFuture):
        return [f._single() for f in value.futures]
    if isinstance(value, StepRunFuture):
        value = value._single()
    if isinstance(value, ArtifactFuture) or is_stored_artifact(value):
        count = value.item_count
        if count is None:
            raise StepInputError(
                f"cannot map {step_name!r} over input {arg!r}: artifact of type "
                f"{value.data_type.rpartition(':')[2]} is not a sequence; wrap it in unmapped(...) "
                "to pass it whole"
            )
        return _Chunks(value, count)
    if is_mappable(value):  # lists, tuples, ranges, sets, generators and other iterators
        return list(value)
    return None
