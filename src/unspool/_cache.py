"""Whether an invocation needs to run: cache keys, cache hits, and reuse on resume.

A step run's **cache key** hashes what determines its outputs: the step's source, its
parameters, the content hashes of its inputs, its output names and materializers. A
completed step run with the same key is a cache hit (when caching is enabled), found in
the process's cache index (``Stores.cached_outputs``, one query per step name) or among the
step runs this process completed (``Stores.cache_memo``).

On **resume**, an invocation id that completed before on the same inputs (same cache key)
is reused as it is, whatever the cache setting; anything else that ran under that id is
replaced by the new attempt, keeping its attempts in the new record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _queries
from ._cache_keys import step_cache_key
from ._invocation import PreviousRun
from ._stores import CacheEntry, Stores
from ._types import ExecutionStatus, Produced

if TYPE_CHECKING:
    from ._invocation import Invocation

InputId = tuple[str, int, Produced, "int | None"]  # (input name, position, artifact, item index)


def cache_key(inv: Invocation, input_ids: list[InputId], output_names: list[str]) -> str:
    """The cache key of ``inv`` given its inputs and the artifact names of its outputs (what
    the key covers: see ``_cache_keys``). The inputs are streamed into the hash, not listed
    first: a reduce over a million mapped outputs would hold a million more tuples."""
    step = inv.step
    return step_cache_key(
        step, inv.params, ((name, pos, produced.content_hash, index) for name, pos, produced, index in input_ids),
        [(spec.name, artifact_name) for spec, artifact_name in zip(step.outputs, output_names)],
        step.config.recorded()["output_materializers"],
    )


def lookup(stores: Stores, key: str, step_name: str) -> CacheEntry | None:
    """``(step run id, outputs)`` of a completed step run with this key whose files are still
    intact, if any (a hit whose files were deleted or changed runs the step again)."""
    hit = stores.cache_memo.get(key) or stores.cached_outputs(step_name).get(key)
    if hit is not None and not outputs_intact(stores, hit[1]):
        return None
    return hit


def outputs_intact(stores: Stores, outputs: dict[str, Produced]) -> bool:
    if not all(stores.artifacts.damage(p.uri, p.size) is None for p in outputs.values()):
        return False
    for p in outputs.values():
        p.intact = True  # just listed: the run's loads of it need not list it again
    return True


def earlier(stores: Stores, previous: PreviousRun | None, inv: Invocation) -> tuple[dict[str, Any], dict[str, Produced], bool] | None:
    """What ran before under ``inv``'s id in a resumed run: ``(row, outputs, reusable)``;
    ``reusable`` when it succeeded on the same inputs and its files are intact. None when
    nothing ran."""
    prev = previous.steps.get(inv.id) if previous else None
    if prev is None:
        return None
    row, outputs = prev
    ok = row["status"] in (ExecutionStatus.COMPLETED.value, ExecutionStatus.CACHED.value)
    return row, outputs, ok and row["cache_key"] == inv.cache_key and outputs_intact(stores, outputs)


def load_previous(stores: Stores, run_id: str) -> PreviousRun:
    """Read what an earlier execution of ``run_id`` recorded (for resume)."""
    stores.metadata.flush()
    run, rows, outputs, children = _queries.run_record(stores.metadata, run_id)
    produced: dict[str, dict[str, Produced]] = {}
    for o in outputs:
        produced.setdefault(o["step_run_id"], {})[o["output_name"]] = Produced(
            id=o["id"], name=o["name"], uri=o["uri"], materializer=o["materializer"],
            data_type=o["data_type"], content_hash=o["content_hash"], size=o["size"],
            item_count=o["item_count"], producer_step_run_id=o["producer_step_run_id"], version=o["version"],
        )
    return PreviousRun(
        run_id=run_id,
        name=run["name"],
        steps={r["invocation_id"]: (dict(r), produced.get(r["id"], {})) for r in rows},
        children=dict(children),
        substitutions=dict((run["config"] or {}).get("resolved_substitutions") or {}),
    )
