"""JSON as the metadata store writes it: any value a step records becomes JSON, never a failed flush.

SQLite keeps NaN and infinities as JSON allows them in Python; a server that validates JSON
(PostgreSQL) gets them as strings. The dashboard uses the same encoding for its responses.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ._types import EncodedJSON

# Values most rows hold (no error, no metadata, no attempts yet): their JSON without encoding.
_CONSTANT = {type(None): "null", dict: "{}", list: "[]"}


def _dumps(value: Any) -> str:
    kind = type(value)
    if kind is EncodedJSON:
        return value.text
    if not value and kind in _CONSTANT:
        return _CONSTANT[kind]
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    """A value JSON cannot hold never poisons a flush: numpy scalars and arrays become numbers
    and lists (``tolist``), sets lists, anything else its repr."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return tolist()
        except Exception:
            pass
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    try:  # pydantic models, enums, dates, UUIDs, paths, dataclasses: their JSON form
        from pydantic_core import to_jsonable_python

        return to_jsonable_python(value)
    except Exception:
        return repr(value)


def _dumps_strict(value: Any) -> str:
    """JSON for servers that validate it (PostgreSQL): NaN and infinities become strings."""
    if type(value) is EncodedJSON:
        return value.text
    try:
        return json.dumps(value, allow_nan=False, default=_json_default)
    except ValueError:
        return json.dumps(_finite(json.loads(_dumps(value))), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
