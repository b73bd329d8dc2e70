"""Upstreams from other runs of the same tree (a child run's output feeding a parent's step).

A step run records its upstream steps by invocation id. An upstream in another run is
recorded with that run's path of child invocation ids, ``pipeline:child/produce``
(``pipeline:child/pipeline:grandchild/produce`` deeper down; the root run's own steps as
``<root run name>/produce``), so ``runs dag`` draws it as an external node instead of
confusing it with a step of this run that has the same invocation id.
"""

from __future__ import annotations

from typing import Any


def upstream_name(run: Any, up: Any) -> str:
    """How step run ``up`` (an invocation) is recorded as an upstream of a step of ``run``."""
    if up.run is run:
        return up.id
    path = []
    current = up.run
    while current.parent is not None:
        path.append(current.invocation_id or current.id)
        current = current.parent
    if not path:
        path.append(current.name)
    return "/".join([*reversed(path), up.id])
