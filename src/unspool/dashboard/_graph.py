"""A run's steps as a graph to draw: map fan-outs folded into groups, child runs as nodes.

Groups come from the marker the engine records on every member of one ``.map()`` or
``.product()`` call (``config["map"]``: the first member's invocation id), never from step
names: two separate calls of one step stay two nodes, and a map of one item is a group of
one. A group's id is ``g:`` + that marker. The database does the counting
(``_dashboard_queries.graph_rows`` answers one row per map call, status and distinct
upstream list), so a 100,000-member map costs a handful of rows here.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable

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
    members: Callable[[str, int, int, int], list[tuple[Any, ...]]] | None = None,
    map_members: Callable[[], dict[str, str]] | None = None,
    children: list[dict[str, Any]] | None = None,
    child_counts: dict[str, dict[str, int]] | None = None,
    owners: Any = None,
    cross: list[tuple[str, str, str]] | None = None,
) -> dict[str, Any]:
    """Nodes and edges from ``graph_rows`` (see there). ``members(key, first, last, limit)``
    gives an expanded group's members; ``map_members()`` maps every mapped invocation id to its
    map key (asked only when an upstream names one); ``owners(unknown_invocation_ids)`` maps
    upstream ids that are not steps of this run to the child run holding them; ``cross``
    (invocation id, child run id, upstream invocation id) says which upstream ids of a step
    are a child run's, from lineage, which matters when a child reuses its parent's step names."""
    expand = expand or set()
    nodes: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    node_of: dict[str, str] = {}  # invocation id (or map key) -> node id
    parsed: dict[str, list[str]] = {}  # one parse per distinct upstream text
    links: list[tuple[str, list[str], int]] = []  # (target node, upstream ids, steps with them)
    total = 0
    for key, status, raw, count, first, last, name, step_id, inv in rows:
        total += count
        up = parsed.get(raw)
        if up is None:
            up = parsed[raw] = json.loads(raw) if raw else []
        if key is None:  # a step no map made: a group of its own
            node_of[inv] = inv
            links.append((inv, up, count))
            nodes.append({
                "id": inv, "kind": "step", "label": inv, "step_name": name, "status": status,
                "step_id": step_id, "position": first,
            })
            continue
        gid = "g:" + key
        node_of[key] = gid
        links.append((gid, up, count))
        group = by_id.get(gid)
        if group is None:
            group = by_id[gid] = {
                "id": gid, "kind": "group", "label": name, "step_name": name, "status": "initializing",
                "counts": {}, "size": 0, "first_position": first, "last_position": last,
                "first_invocation": key, "expanded": False,
            }
            nodes.append(group)
        group["counts"][status] = group["counts"].get(status, 0) + count
        group["size"] += count
        group["first_position"] = min(group["first_position"], first)
        group["last_position"] = max(group["last_position"], last)
    for group in by_id.values():
        group["status"] = group_status(group["counts"])

    # expanded groups: their members follow them, as cells (edges stay on the group)
    budget = MAX_EXPANDED
    truncated = False
    out: list[dict[str, Any]] = []
    for node in nodes:
        out.append(node)
        if node["kind"] != "group" or node["id"] not in expand or budget <= 0 or members is None:
            continue
        shown = members(node["first_invocation"], node["first_position"], node["last_position"], min(budget, node["size"]))
        budget -= len(shown)
        truncated = truncated or len(shown) < node["size"]
        node["expanded"] = True
        node["shown"] = len(shown)
        for step_id, inv, position, name, status in shown:
            out.append({
                "id": inv, "kind": "step", "label": inv, "step_name": name, "status": status,
                "step_id": step_id, "position": position, "group": node["id"],
            })

    for child in children or []:
        rid = "r:" + child["id"]
        counts = (child_counts or {}).get(child["id"], {})
        out.append({
            "id": rid, "kind": "run", "label": child.get("invocation_id") or child["name"],
            "run_id": child["id"], "pipeline_name": child["pipeline_name"], "status": child["status"],
            "counts": counts, "size": sum(counts.values()),
        })

    learned = False

    def learn_members() -> None:
        nonlocal learned
        if not learned and map_members is not None and by_id:
            learned = True
            node_of.update(map_members())

    upstream_ids: set[str] = set()
    for _, up, _ in links:
        upstream_ids.update(up)
    unknown = upstream_ids.difference(node_of)
    if unknown:
        learn_members()
        unknown.difference_update(node_of)
    # An upstream in another run of the tree is recorded as a path of child invocation ids
    # ("pipeline:child/produce"): it hangs on the node of the child run that path goes through.
    by_invocation = {c.get("invocation_id"): "r:" + c["id"] for c in children or [] if c.get("invocation_id")}
    for u in unknown:
        if "/" in u:
            for part in u.split("/")[:-1]:
                if part in by_invocation:
                    node_of[u] = by_invocation[part]
                    break
    unknown = sorted(u for u in unknown if u not in node_of)
    if unknown and owners is not None:
        for inv, run_id in owners(unknown).items():
            node_of[inv] = "r:" + run_id

    from_child: dict[tuple[str, str], str] = {}
    for inv, run, up in cross or []:
        if inv not in node_of:
            learn_members()
        target = node_of.get(inv)
        if target is not None:
            from_child[(target, up)] = "r:" + run
    edges: dict[tuple[str, str], int] = {}
    for target, up, count in links:
        if from_child:
            sources = Counter(from_child.get((target, u)) or node_of.get(u) for u in up)
        else:
            sources = Counter(map(node_of.get, up))  # a gather of 100,000 members: counted in C
        for source, n in sources.items():
            if source is None or source == target:
                continue
            edges[(source, target)] = edges.get((source, target), 0) + n * count
    return {
        "nodes": out,
        "edges": [{"source": s, "target": t, "count": n} for (s, t), n in edges.items()],
        "total_steps": total,
        "truncated": truncated,
    }
