"""Pipelines for the concurrent-writer and full-disk scenarios of torture/run.py."""

from __future__ import annotations

import os

from unspool import pipeline, step

PRINT_BYTES = int(os.environ.get("PRINT_BYTES", "0"))  # what each `bump` prints (fills the log store)


@step(enable_cache=False)
def make(n: int) -> list[int]:
    return list(range(n))


@step(enable_cache=False)
def bump(x: int, tag: str) -> int:
    if PRINT_BYTES:
        print("x" * PRINT_BYTES)
    return x + 1


@step(enable_cache=False)
def total(xs: list[int]) -> int:
    return sum(xs)


@pipeline(dynamic=True)
def busy(tag: str = "t", width: int = 60, chain: int = 20):
    """1 + width + 1 + chain steps."""
    values = bump.map(make(width), tag=tag)
    link = total(values)
    for _ in range(chain):
        link = bump(link, tag=tag)
