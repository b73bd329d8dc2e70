"""Previews of stored artifacts that never unpickle anything unless asked.

What each materializer wrote is read directly: JSON files (capped), the JSON elements of a
stored sequence (the first ones, through its offsets file), a numpy array's header (shape,
dtype) and a summary of its first values, bytes as text or as an image. Pickled data
(cloudpickle fallback, pickled sequences, DataFrames) is described from its metadata, and
loaded only when the caller passes ``unpickle=True``.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

MAX_BYTES = 1_000_000
MAX_ROWS = 1_000
_OFFSET = struct.Struct("<q")
_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def _kind(materializer: str) -> str:
    return materializer.rpartition(".")[2].rpartition(":")[2]


def preview(store: Any, version: dict[str, Any], *, unpickle: bool = False, max_bytes: int = MAX_BYTES, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """A JSON-able preview of ``version`` (an artifact_versions row)."""
    uri = version["uri"]
    kind = _kind(version["materializer"])
    out: dict[str, Any] = {
        "id": version["id"], "size": version["size"], "data_type": version["data_type"],
        "materializer": version["materializer"], "metadata": version.get("artifact_metadata") or {},
        "pickled": False, "truncated": False,
    }

    def path(name: str) -> str:
        return store.join(uri, name)

    def read(name: str, limit: int | None = None) -> tuple[bytes, bool]:
        with store.open(path(name), "rb") as f:
            data = f.read((limit if limit is not None else max_bytes) + 1)
        cap = limit if limit is not None else max_bytes
        return data[:cap], len(data) > cap

    try:
        if kind == "NoneMaterializer":
            out.update(kind="json", value=None)
        elif store.exists(path("data.json")):
            data, cut = read("data.json")
            out["truncated"] = cut
            if cut:
                out.update(kind="text", text=data.decode(errors="replace"))
            else:
                out.update(kind="json", value=json.loads(data))
        elif store.exists(path("meta.json")) and store.exists(path("offsets.bin")):
            _sequence(store, path, out, unpickle=unpickle, max_bytes=max_bytes, max_rows=max_rows)
        elif store.exists(path("data.npy")):
            _array(store, path("data.npy"), out, max_rows=max_rows)
        elif store.exists(path("data.bin")):
            data, cut = read("data.bin")
            out["truncated"] = cut
            mime = next((m for magic, m in _IMAGE_MAGIC.items() if data.startswith(magic)), None)
            if mime and not cut:
                out.update(kind="image", mime=mime, data=base64.b64encode(data).decode())
            else:
                try:
                    out.update(kind="text", text=data.decode())
                except UnicodeDecodeError:
                    out.update(kind="binary", hex=data[:4096].hex())
        elif store.exists(path("data.pkl")):
            out["pickled"] = True
            if not unpickle:
                out.update(kind="pickled", message="pickled data: loading it runs code from the artifact store; load it only if you trust its producer")
            else:
                _unpickled(store, path("data.pkl"), out, max_bytes=max_bytes, max_rows=max_rows)
        else:
            out.update(kind="none", message="no previewable file in this artifact")
    except FileNotFoundError:
        out.update(kind="missing", message=f"the artifact's files are not in the artifact store ({uri})")
    return out


def _sequence(store: Any, path: Any, out: dict[str, Any], *, unpickle: bool, max_bytes: int, max_rows: int) -> None:
    with store.open(path("meta.json"), "rb") as f:
        meta = json.loads(f.read(65536))
    count = int(meta.get("count", 0))
    shown = min(count, max_rows)
    with store.open(path("offsets.bin"), "rb") as f:
        raw = f.read((shown + 1) * _OFFSET.size)
    offsets = [o for (o,) in _OFFSET.iter_unpack(raw)]
    end = offsets[-1] if offsets else 0
    if end > max_bytes:  # fewer items, so that at most max_bytes are read
        shown = max(0, max(i for i, o in enumerate(offsets) if o <= max_bytes))
        end = offsets[shown]
    out.update(kind="sequence", count=count, container=meta.get("container"), codec=meta.get("codec"))
    out["truncated"] = shown < count
    if meta.get("codec") != "json":
        out["pickled"] = True
        if not unpickle:
            out.update(items=None, message="pickled elements: load them only if you trust their producer")
            return
    with store.open(path("items.bin"), "rb") as f:
        blob = f.read(end)
    items = []
    for a, b in zip(offsets[:shown], offsets[1 : shown + 1]):
        if meta.get("codec") == "json":
            items.append(json.loads(blob[a:b]))
        else:
            import pickle

            items.append(_jsonable(pickle.loads(blob[a:b])))
    out["items"] = items


def _array(store: Any, file: str, out: dict[str, Any], *, max_rows: int) -> None:
    import numpy as np

    with store.open(file, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        out.update(kind="array", shape=list(shape), dtype=str(dtype))
        if dtype.hasobject:
            out["pickled"] = True
            out["message"] = "an array of Python objects (pickled): not read"
            return
        total = int(np.prod(shape)) if shape else 1
        n = min(total, max_rows * 10, max(1, MAX_BYTES // max(dtype.itemsize, 1)))
        values = np.frombuffer(f.read(n * dtype.itemsize), dtype=dtype, count=n)
    out["truncated"] = n < total
    out["sample"] = values[:max_rows].tolist()
    out["sample_order"] = "F" if fortran else "C"
    if values.size and np.issubdtype(dtype, np.number):
        out["summary"] = {
            "of_first": int(values.size), "min": _num(values.min()), "max": _num(values.max()),
            "mean": _num(values.mean()),
        }


def _num(value: Any) -> Any:
    value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _unpickled(store: Any, file: str, out: dict[str, Any], *, max_bytes: int, max_rows: int) -> None:
    import pickle

    with store.open(file, "rb") as f:
        value = pickle.load(f)
    if hasattr(value, "head") and hasattr(value, "to_dict"):  # a pandas DataFrame or Series
        frame = value.to_frame() if not hasattr(value, "columns") else value
        head = frame.head(max_rows)
        out.update(
            kind="table", rows=len(frame), columns=[str(c) for c in frame.columns],
            data=[[_jsonable(v) for v in row] for row in head.itertuples(index=False, name=None)],
            index=[_jsonable(i) for i in head.index],
        )
        out["truncated"] = len(frame) > max_rows
        return
    text = repr(value)
    out.update(kind="text", text=text[:max_bytes])
    out["truncated"] = len(text) > max_bytes


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        item = getattr(value, "item", None)
        if callable(item):
            try:
                return item()
            except Exception:
                pass
        return repr(value)
