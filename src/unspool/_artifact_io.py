"""Reading artifacts back: where an artifact lives (:class:`ArtifactRef`), the artifact store
for a URL (one per URL and process), and loading data through its materializer.

Used by the step runner (inputs), the pipeline body (``future.load()``) and the client
(``ArtifactVersion.load()``) alike; saving, which needs the step's output configuration,
is the runner's.
"""

from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass
from typing import Any

from ._artifact_store import ArtifactStore
from ._errors import ArtifactDamagedError
from ._materializers import materializer_from_path
from ._types import Produced


@dataclass(slots=True)
class ArtifactRef:
    """Where an input artifact (or one element of it) lives. Slotted: a reduce over a
    million mapped outputs holds a million of them."""

    uri: str
    materializer: str
    data_type: str
    item_index: int | None = None
    size: int | None = None  # as recorded: a load checks the files still hold that many bytes
    name: str | None = None  # the artifact's name, for errors
    content_hash: str | None = None  # as recorded, when known


def ref_to(produced: Produced | Any, item_index: int | None = None) -> ArtifactRef:
    """The reference a load of ``produced`` (or one of its elements) uses. A version this
    process wrote, or found intact, in the run is not listed again before each load: a map
    over a list would otherwise list the list's folder once per element, and a reduce list
    every mapped step's folder. Versions from outside the run (cache hits, resume, the
    client) are checked."""
    size = None if getattr(produced, "intact", False) else produced.size  # a client's version: checked
    return ArtifactRef(produced.uri, produced.materializer, produced.data_type, item_index, size, produced.name,
                       produced.content_hash)


_stores: dict[str, ArtifactStore] = {}


def artifact_store_for(url: str) -> ArtifactStore:
    store = _stores.get(url)
    if store is None:
        store = _stores[url] = ArtifactStore(url)
    return store


def forget_artifact_store(url: str) -> None:
    """Drop the cached store for ``url`` (a forked worker opens its own connections)."""
    _stores.pop(url, None)


def type_path(value_type: type) -> str:
    return f"{value_type.__module__}:{value_type.__qualname__}"


def resolve_type(path: str) -> Any:
    module, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    except Exception:
        return Any


def load_artifact(store: ArtifactStore, ref: ArtifactRef, annotation: Any = Any) -> Any:
    if ref.size is not None:
        problem = store.damage(ref.uri, ref.size)
        if problem is not None:
            raise ArtifactDamagedError(
                f"artifact {ref.name or ref.uri!r} is damaged: {problem} (at {ref.uri}); run its "
                "pipeline again (a cached step whose output is damaged runs again), and see "
                "`unspool artifacts verify` for other damaged versions"
            )
    materializer = materializer_from_path(ref.materializer)(ref.uri, store)
    materializer.content_hash = ref.content_hash
    if ref.item_index is not None:
        return materializer.load_item(ref.item_index)
    # The stored type wins unless the annotation asks for another one (int stored, float
    # wanted). typing.Any is a class since Python 3.11, so it is never taken as a type.
    stored = resolve_type(ref.data_type)
    stored = stored if isinstance(stored, type) and stored is not Any else None
    wanted = annotation if isinstance(annotation, type) and annotation is not Any else None
    if wanted is not None and typing.is_typeddict(wanted):
        wanted = dict  # a TypedDict is a dict at run time; issubclass() refuses it
    if wanted is not None and not (stored is not None and issubclass(stored, wanted)):
        data_type = wanted
    else:
        data_type = stored or typing.get_origin(annotation) or object
    return materializer.load(data_type)
