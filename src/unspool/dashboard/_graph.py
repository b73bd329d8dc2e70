"""A run's steps as a graph to draw: map fan-outs folded into groups, child runs as nodes.

The store does not mark which invocations came from one ``.map()`` call, so groups are
recognised from what it does record: a fan-out records its invocations one after another
(consecutive positions) with the same step name, and none of them depends on another. Any
such block of at least ``MIN_GROUP`` invocations becomes one group node carrying its
members' counts by status; a chain of calls of one step (each feeding the next) never
folds. A group's id is ``g:`` + its first member's invocation id, so it stays the same as a
dynamic body adds members, and a single step that becomes the first of a group is
recognisable (``x`` -> ``g:x``).
"""

from __future__ import annotations

import json
from typing import Any

MIN_GROUP = 2
MAX_EXPANDED = 50_000  # member nodes sent for expanded groups, in all


def group_status(counts: dict[str, int]) -> str:
    """One status for a set of steps, the most telling first."""
    for status in ("running", "failed", "initializing", "stopped", "skipped"):
        if counts.get(status):
            if status == "initializing" and not any(counts.get(s) for s in ("completed", "cached")):
                return "initializing"
            if status == "initializing":
                return "running"
            return status
    if counts.get("completed"):
        return "completed"
    if counts.get("cached"):
        return "cached"
    return "initializing"


def build_graph(
    rows: list[tuple[Any, ...]],
    *,
    expand: set[str] | None = None,
    children: list[dict[str, Any]] | None = None,
    child_counts: dict[str, dict[str, int]] | None = None,
    owners: Any = None,
    cross: list[tuple[str, str, str]] | None = None,
) -> dict[str, Any]:
    """Nodes and edges from ``graph_rows``: (id, invocation id, position, step name, status,
    upstream JSON). ``owners(unknown_invocation_ids)`` maps upstream ids that are not steps of
    this run to the child run holding them; ``cross`` (invocation id, child run id, upstream
    invocation id) says which upstream ids of a step are a child run's, from lineage, which
    matters when a child run reuses step names of its parent."""
    expand = expand or set()
    # 1. blocks of consecutive independent invocations of one step
    blocks: list[tuple[int, int]] = []  # [start, end) indices into rows
    uppers: list[list[str]] = []
    start = 0
    members: set[str] = set()
    name = None
    parsed: dict[str, list[str]] = {}  # the members of a fan-out share one upstream text
    for i, row in enumerate(rows):
        raw = row[5]
        if isinstance(raw, str):
            up = parsed.get(raw)
            if up is None:
                up = parsed[raw] = json.loads(raw)
        else:
            up = raw or []
        uppers.append(up)
        if row[3] != name or any(u in members for u in up):
            if i > start:
                blocks.append((start, i))
            start, name, members = i, row[3], set()
        members.add(row[1])
    if rows:
        blocks.append((start, len(rows)))

    node_of: dict[str, str] = {}  # invocation id -> node id
    nodes: list[dict[str, Any]] = []
    expanded_budget = MAX_EXPANDED  # expanded members are sent as nodes with "group" set
    truncated = False
    for a, b in blocks:
        if b - a < MIN_GROUP:
            for row in rows[a:b]:
                node_of[row[1]] = row[1]
                nodes.append(_step_node(row))
            continue
        first = rows[a]
        gid = "g:" + first[1]
        counts: dict[str, int] = {}
        for row in rows[a:b]:
            counts[row[4]] = counts.get(row[4], 0) + 1
        is_open = gid in expand and expanded_budget > 0
        nodes.append(
            {
                "id": gid, "kind": "group", "label": first[3], "step_name": first[3],
                "status": group_status(counts), "counts": counts, "size": b - a,
                "first_position": first[2], "last_position": rows[b - 1][2],
                "first_invocation": first[1], "expanded": is_open,
            }
        )
        if is_open:
            shown = min(b - a, expanded_budget)
            expanded_budget -= shown
            truncated = truncated or shown < b - a
            nodes[-1]["shown"] = shown
            for row in rows[a : a + shown]:
                node_of[row[1]] = gid  # edges stay on the group: members are drawn as cells
                node = _step_node(row)
                node["group"] = gid
                nodes.append(node)
            for row in rows[a + shown : b]:
                node_of[row[1]] = gid
        else:
            for row in rows[a:b]:
                node_of[row[1]] = gid

    for child in children or []:
        rid = "r:" + child["id"]
        counts = (child_counts or {}).get(child["id"], {})
        nodes.append(
            {
                "id": rid, "kind": "run", "label": child.get("invocation_id") or child["name"],
                "run_id": child["id"], "pipeline_name": child["pipeline_name"], "status": child["status"],
                "counts": counts, "size": sum(counts.values()),
            }
        )

    unknown = sorted({u for up in uppers for u in up if u not in node_of})
    # An upstream in another run of the tree is recorded as a path of child invocation ids
    # ("pipeline:child/produce"): it hangs on the node of the child run that path goes through.
    by_invocation = {c.get("invocation_id"): "r:" + c["id"] for c in children or [] if c.get("invocation_id")}
    for u in unknown:
        if "/" in u:
            for part in u.split("/")[:-1]:
                if part in by_invocation:
                    node_of[u] = by_invocation[part]
                    break
    unknown = [u for u in unknown if u not in node_of]
    if unknown and owners is not None:
        for inv, run_id in owners(unknown).items():
            node_of[inv] = "r:" + run_id

    from_child: dict[tuple[str, str], str] = {(inv, up): "r:" + run for inv, run, up in cross or []}
    edges: dict[tuple[str, str], int] = {}
    for row, up in zip(rows, uppers):
        target = node_of[row[1]]
        for u in up:
            source = from_child.get((row[1], u)) if from_child else None
            source = source or node_of.get(u)
            if source is None or source == target:
                continue
            key = (source, target)
            edges[key] = edges.get(key, 0) + 1
    return {
        "nodes": nodes,
        "edges": [{"source": s, "target": t, "count": n} for (s, t), n in edges.items()],
        "total_steps": len(rows),
        "truncated": truncated,
    }


def _step_node(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[1], "kind": "step", "label": row[1], "step_name": row[3], "status": row[4],
        "step_id": row[0], "position": row[2],
    }
