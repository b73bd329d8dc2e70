"""Materializers turn Python values into files in the artifact store and back.

A materializer is bound to one artifact directory (``uri``). ``save`` writes files into it
through ``self.artifact_store.open`` (so bytes are hashed on the way out), ``load`` reads
them back as ``data_type``. Sequence materializers also support ``load_item``: fan-out
(``.map``/``.chunk``) reads one element without loading the whole list.

User materializers subclass :class:`BaseMaterializer` and list ``ASSOCIATED_TYPES``; they
are registered for those types when the class is created, or chosen per output with
``@step(output_materializers=...)``. Values no materializer claims are cloudpickled, and the
artifact records ``CloudpickleMaterializer`` so the fallback is visible.

Pickle is never hidden: a materializer whose value JSON cannot carry (a dict with int keys, a
dataclass holding a set) hands it to a pickling materializer and sets ``stored_with`` to it,
and that class is what the artifact records. Every built-in class has exactly one
``STORED_FORMAT``, so the recorded name says whether loading unpickles; a class whose format
is JSON never unpickles, whatever files its folder holds.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import struct
import threading
from typing import Any, ClassVar

from ._artifact_store import ArtifactStore
from ._errors import MaterializerError

# Materializers for optional packages are looked up by the fully qualified type name, so
# that importing unspool never imports numpy, pandas or pydantic.
_LAZY_TYPES: dict[str, str] = {}


class MaterializerRegistry:
    def __init__(self) -> None:
        self._by_type: dict[type, type[BaseMaterializer]] = {}

    def register(self, data_type: type, materializer: type[BaseMaterializer]) -> None:
        self._by_type[data_type] = materializer

    def for_type(self, data_type: type) -> type[BaseMaterializer]:
        for klass in getattr(data_type, "__mro__", (data_type,)):
            found = self._by_type.get(klass)
            if found is not None:
                return found
            lazy = _LAZY_TYPES.get(f"{klass.__module__}.{klass.__qualname__}")
            if lazy is not None:
                return materializer_from_path(lazy)
        if dataclasses.is_dataclass(data_type):
            return DataclassMaterializer
        return CloudpickleMaterializer


materializer_registry = MaterializerRegistry()


def materializer_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def materializer_from_path(path: str) -> type[BaseMaterializer]:
    module, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise MaterializerError(
            f"materializer {path!r} cannot be imported ({exc}); make sure the module that "
            "defines it is importable where the artifact is loaded"
        ) from exc
    return obj


class BaseMaterializer:
    """Base class of all materializers. Subclass it, set ``ASSOCIATED_TYPES``, implement
    ``save`` and ``load``; optionally ``extract_metadata``."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = ()
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    SKIP_REGISTRATION: ClassVar[bool] = False
    # How the bytes are stored; "pickle" means loading runs code from whoever could write
    # the artifact store. None: not declared (a user materializer).
    STORED_FORMAT: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("SKIP_REGISTRATION", False):
            for data_type in cls.ASSOCIATED_TYPES:
                materializer_registry.register(data_type, cls)

    def __init__(self, uri: str, artifact_store: Any = None) -> None:
        self.uri = uri
        # The class that can read what save() wrote; the artifact version records it.
        self.stored_with: type[BaseMaterializer] = type(self)
        # The recorded content hash of the version being loaded, when the loader knows it
        # (an index or cache of the version may be keyed by it).
        self.content_hash: str | None = None
        if artifact_store is None:
            artifact_store = ArtifactStore(uri.rsplit("/", 1)[0] if "://" in uri else uri)
        self.artifact_store = artifact_store

    def path(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}"

    def save(self, data: Any) -> None:
        raise NotImplementedError

    def load(self, data_type: type) -> Any:
        raise NotImplementedError

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        return {}

    # -- element access, used by fan-out ----------------------------------------------------
    def item_count(self, data: Any) -> int | None:
        """Number of elements if the value can be mapped over, else None."""
        return None

    def load_item(self, index: int) -> Any:
        data = self.load(list)
        return data[index]

    # -- helpers ------------------------------------------------------------------------------
    def _write(self, name: str, payload: bytes) -> None:
        with self.artifact_store.open(self.path(name), "wb") as f:
            f.write(payload)

    def _read(self, name: str) -> bytes:
        with self.artifact_store.open(self.path(name), "rb") as f:
            return f.read()

    def _read_json_only(self, name: str) -> bytes:
        """Read the JSON file of a version recorded as JSON; never falls back to a pickle."""
        try:
            return self._read(name)
        except FileNotFoundError:
            raise MaterializerError(
                f"artifact at {self.uri} is recorded as {type(self).__name__} (JSON) but holds no "
                f"{name}; a pickle there (older unspool versions wrote one) is not loaded. If you trust "
                "whoever could write the store, load it with CloudpickleMaterializer"
            ) from None


class PathMaterializer(BaseMaterializer):
    """A file or folder registered in place (``register_artifact``): loading gives its path."""

    SKIP_REGISTRATION = True

    def save(self, data: Any) -> None:
        raise MaterializerError("PathMaterializer only loads paths registered with register_artifact()")

    def load(self, data_type: type) -> Any:
        from pathlib import Path

        return Path(self.uri)


class NoneMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (type(None),)
    STORED_FORMAT = "none"

    def save(self, data: Any) -> None:
        self._write("none", b"")

    def load(self, data_type: type) -> Any:
        return None


class BuiltInMaterializer(BaseMaterializer):
    """bool, int, float and str as JSON."""

    ASSOCIATED_TYPES = (bool, int, float, str)
    STORED_FORMAT = "json"

    def save(self, data: Any) -> None:
        self._write("data.json", json.dumps(data).encode())

    def load(self, data_type: type) -> Any:
        value = json.loads(self._read("data.json"))
        # Also brings back subclasses such as IntEnum members and str enums. Only lossless
        # conversions: 3 -> 3.0 for a float input, but 2.5 is never truncated to an int.
        if isinstance(data_type, type) and issubclass(data_type, (int, float, str)) and type(value) is not data_type:
            try:
                converted = data_type(value)
            except (TypeError, ValueError):
                converted = value
            if converted == value:
                value = converted
        return value

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        if isinstance(data, str):
            return {"length": len(data)}
        return {"value": data}


class BytesMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (bytes, bytearray)
    STORED_FORMAT = "bytes"

    def save(self, data: Any) -> None:
        self._write("data.bin", bytes(data))

    def load(self, data_type: type) -> Any:
        raw = self._read("data.bin")
        return bytearray(raw) if data_type is bytearray else raw

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        return {"length": len(data)}


class DictMaterializer(BaseMaterializer):
    """JSON-able dicts as JSON; any other dict is stored by (and recorded as) cloudpickle."""

    ASSOCIATED_TYPES = (dict,)
    STORED_FORMAT = "json"

    def save(self, data: Any) -> None:
        try:
            payload = json.dumps(data).encode()
            if json.loads(payload) != data:  # int keys, tuples: JSON would change them
                raise ValueError("JSON does not round-trip")
        except (TypeError, ValueError):
            _pickle_instead(self, data)
            return
        self._write("data.json", payload)

    def load(self, data_type: type) -> Any:
        return json.loads(self._read_json_only("data.json"))

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        return {"length": len(data)}


_OFFSET = struct.Struct("<q")
_SEQUENCE_INDEX: dict[tuple[Any, ...], tuple[dict[str, Any], list[int], bytes | None]] = {}
_SEQUENCE_INDEX_LOCK = threading.Lock()
_SEQUENCE_INDEX_ENTRIES = 16
_SEQUENCE_BLOB_BYTES = 32 << 20  # items of a list up to this size are read once, not per element,
_SEQUENCE_SMALL_ITEM = 256  # when they average up to this many bytes


class SequenceMaterializer(BaseMaterializer):
    """Lists and tuples, stored element by element so one element can be read alone.

    ``items.bin`` holds the encoded elements back to back, ``offsets.bin`` their start
    offsets (8 bytes each, plus the end), ``meta.json`` the codec (``json`` when every
    element is JSON-able, else ``pickle``), the container type and the count.
    """

    ASSOCIATED_TYPES = (list, tuple)
    STORED_FORMAT = "json"
    _UNPICKLES = False

    def save(self, data: Any) -> None:
        try:
            encoded = [json.dumps(item).encode() for item in data]
            if any(json.loads(blob) != item for blob, item in zip(encoded, data)):
                raise ValueError("JSON does not round-trip")  # tuples, int keys...
            codec = "json"
        except (TypeError, ValueError):
            import cloudpickle

            encoded = [cloudpickle.dumps(item) for item in data]
            codec = "pickle"
            if not self._UNPICKLES:
                self.stored_with = PickledSequenceMaterializer
        offsets = [0]
        for blob in encoded:
            offsets.append(offsets[-1] + len(blob))
        self._write("items.bin", b"".join(encoded))
        self._write("offsets.bin", b"".join(_OFFSET.pack(o) for o in offsets))
        meta = {"codec": codec, "count": len(encoded), "container": type(data).__name__}
        self._write("meta.json", json.dumps(meta).encode())

    def _meta(self) -> dict[str, Any]:
        return json.loads(self._read("meta.json"))

    def _decode(self, codec: str, blob: bytes) -> Any:
        if codec == "json":
            return json.loads(blob)
        if not self._UNPICKLES:
            raise MaterializerError(
                f"artifact at {self.uri} is recorded as {type(self).__name__} (JSON) but its items "
                "are pickled; they are not unpickled. If you trust whoever could write the store, "
                "load it with PickledSequenceMaterializer"
            )
        import pickle

        return pickle.loads(blob)

    def load(self, data_type: type) -> Any:
        meta = self._meta()
        blob = self._read("items.bin")
        raw_offsets = self._read("offsets.bin")
        offsets = [o for (o,) in _OFFSET.iter_unpack(raw_offsets)]
        items = [self._decode(meta["codec"], blob[a:b]) for a, b in zip(offsets, offsets[1:])]
        if data_type is tuple or (data_type is not list and meta.get("container") == "tuple"):
            return tuple(items)
        return items

    def load_item(self, index: int) -> Any:
        meta, offsets, blob = self._index()
        count = meta["count"]
        if not -count <= index < count:
            raise IndexError(f"index {index} is out of range for a sequence of {count} items")
        index %= count
        start, end = offsets[index], offsets[index + 1]
        if blob is None:
            with self.artifact_store.open(self.path("items.bin"), "rb") as f:
                f.seek(start)
                blob = f.read(end - start)
            return self._decode(meta["codec"], blob)
        return self._decode(meta["codec"], blob[start:end])

    def _index(self) -> tuple[dict[str, Any], list[int], bytes | None]:
        """Count, codec, offsets and (when small) the items, read once per process and
        version: a fan-out over a list then reads no file per element.

        Keyed by the version's recorded content hash when the loader knows it (the same
        bytes give the same index, wherever and whenever written), else by the offsets
        file's change time, so a version rewritten in place (resume) is read again.
        """
        key: tuple[Any, ...] | None = None
        if self.content_hash:
            key = (self.uri, self.content_hash)
        elif getattr(self.artifact_store, "is_local", False):
            import os

            try:
                stat = os.stat(self.path("offsets.bin"))
                key = (self.uri, stat.st_mtime_ns, stat.st_size)
            except OSError:
                key = None
        cached = _SEQUENCE_INDEX.get(key) if key else None
        if cached is None:
            offsets = [o for (o,) in _OFFSET.iter_unpack(self._read("offsets.bin"))]
            total = offsets[-1] if offsets else 0
            # Many small elements (a fan-out's inputs): one read instead of one per element.
            # Large elements are read one by one, only the one asked for.
            small = total <= _SEQUENCE_BLOB_BYTES and total <= _SEQUENCE_SMALL_ITEM * max(len(offsets) - 1, 1)
            blob = self._read("items.bin") if small else None
            if blob is not None and len(blob) != offsets[-1]:
                blob = None  # not what the offsets say: read per element (and fail there)
            cached = (self._meta(), offsets, blob)
            if key is not None:
                with _SEQUENCE_INDEX_LOCK:
                    if len(_SEQUENCE_INDEX) >= _SEQUENCE_INDEX_ENTRIES:
                        _SEQUENCE_INDEX.pop(next(iter(_SEQUENCE_INDEX)))
                    _SEQUENCE_INDEX[key] = cached
        return cached

    def item_count(self, data: Any) -> int | None:
        return len(data)

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        return {"length": len(data)}


class PickledSequenceMaterializer(SequenceMaterializer):
    """Lists and tuples whose elements JSON cannot carry: each element cloudpickled on its own
    (so fan-out still reads one element), recorded under this name so the pickle is visible."""

    SKIP_REGISTRATION = True
    STORED_FORMAT = "pickle"
    _UNPICKLES = True


class CloudpickleMaterializer(BaseMaterializer):
    """Fallback for any picklable value (recorded as such on the artifact version)."""

    SKIP_REGISTRATION = True
    STORED_FORMAT = "pickle"

    def save(self, data: Any) -> None:
        import cloudpickle

        try:
            payload = cloudpickle.dumps(data)
        except Exception as exc:
            raise MaterializerError(
                f"value of type {type(data).__qualname__} cannot be serialised ({exc}); return "
                "a serialisable value or register a materializer for this type"
            ) from exc
        self._write("data.pkl", payload)

    def load(self, data_type: type) -> Any:
        import pickle

        return pickle.loads(self._read("data.pkl"))


class DataclassMaterializer(BaseMaterializer):
    """Dataclasses as JSON of their fields when JSON-able, else stored by (and recorded as)
    cloudpickle."""

    SKIP_REGISTRATION = True
    STORED_FORMAT = "json"

    def save(self, data: Any) -> None:
        try:
            payload = json.dumps(dataclasses.asdict(data)).encode()
            if type(data)(**json.loads(payload)) != data:  # nested dataclasses, tuples...
                raise ValueError("JSON does not round-trip")
        except (TypeError, ValueError):
            _pickle_instead(self, data)
            return
        self._write("data.json", payload)

    def load(self, data_type: type) -> Any:
        return data_type(**json.loads(self._read_json_only("data.json")))


class PydanticMaterializer(BaseMaterializer):
    SKIP_REGISTRATION = True
    STORED_FORMAT = "json"

    def save(self, data: Any) -> None:
        self._write("data.json", data.model_dump_json().encode())

    def load(self, data_type: type) -> Any:
        if not hasattr(data_type, "model_validate_json"):  # the model's module is not importable here
            return json.loads(self._read("data.json"))
        return data_type.model_validate_json(self._read("data.json"))


class NumpyMaterializer(BaseMaterializer):
    """Arrays as .npy; object arrays (which .npy can only pickle) are stored by, and recorded
    as, cloudpickle."""

    SKIP_REGISTRATION = True
    ASSOCIATED_ARTIFACT_TYPE = "array"
    STORED_FORMAT = "npy"

    def save(self, data: Any) -> None:
        import numpy as np

        if data.dtype.hasobject:
            _pickle_instead(self, data)
            return
        with self.artifact_store.open(self.path("data.npy"), "wb") as f:
            np.save(f, data, allow_pickle=False)

    def load(self, data_type: type) -> Any:
        import numpy as np

        with self.artifact_store.open(self.path("data.npy"), "rb") as f:
            try:
                return np.load(f, allow_pickle=False)
            except ValueError as exc:
                raise MaterializerError(
                    f"artifact at {self.uri} is recorded as NumpyMaterializer (npy) but holds a "
                    f"pickled object array ({exc}); it is not unpickled. If you trust whoever could "
                    "write the store, load it with numpy.load(..., allow_pickle=True)"
                ) from None

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        return {"shape": list(data.shape), "dtype": str(data.dtype)}

    def item_count(self, data: Any) -> int | None:
        return int(data.shape[0]) if data.ndim else None


class PandasMaterializer(BaseMaterializer):
    """DataFrames and Series as pickle (exact round trip, no pyarrow needed)."""

    SKIP_REGISTRATION = True
    ASSOCIATED_ARTIFACT_TYPE = "dataframe"
    STORED_FORMAT = "pickle"

    def save(self, data: Any) -> None:
        with self.artifact_store.open(self.path("data.pkl"), "wb") as f:
            data.to_pickle(f)

    def load(self, data_type: type) -> Any:
        import pandas as pd

        with self.artifact_store.open(self.path("data.pkl"), "rb") as f:
            return pd.read_pickle(f)

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {"rows": len(data)}
        if hasattr(data, "columns"):
            meta["columns"] = [str(c) for c in data.columns]
        return meta


def _pickle_instead(materializer: BaseMaterializer, data: Any) -> None:
    """Store ``data`` with cloudpickle in ``materializer``'s folder and record it as such."""
    CloudpickleMaterializer(materializer.uri, materializer.artifact_store).save(data)
    materializer.stored_with = CloudpickleMaterializer


def stored_format(materializer: str) -> str | None:
    """The stored format a recorded materializer name stands for, without importing user code:
    None for a materializer that is not unspool's own (its format is not known)."""
    module, _, qualname = materializer.partition(":")
    if module != __name__:
        return None
    cls = globals().get(qualname)
    return getattr(cls, "STORED_FORMAT", None) if isinstance(cls, type) else None


_LAZY_TYPES.update(
    {
        "pydantic.main.BaseModel": materializer_path(PydanticMaterializer),
        "numpy.ndarray": materializer_path(NumpyMaterializer),
        "pandas.core.frame.DataFrame": materializer_path(PandasMaterializer),
        "pandas.core.series.Series": materializer_path(PandasMaterializer),
        # pandas >= 3 sets __module__ = "pandas" on its public classes
        "pandas.DataFrame": materializer_path(PandasMaterializer),
        "pandas.Series": materializer_path(PandasMaterializer),
    }
)
