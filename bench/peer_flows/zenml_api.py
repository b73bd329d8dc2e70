"""The peer workloads written against the ZenML dynamic-pipelines API.

``bench/peers.py`` runs this file as it is for unspool, and for ZenML a copy in which only the
import line below is changed (``from zenml import pipeline, step``): the same code, the same
semantics, two frameworks. Usage: ``python zenml_api.py WORKLOAD SIZE OUT_JSON``.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from unspool import pipeline, step  # the one line the ZenML copy changes


@step(enable_cache=False)
def start() -> int:
    return 0


@step(enable_cache=False)
def add_one(x: int) -> int:
    return x + 1


@step(enable_cache=False)
def produce(n: int) -> list[int]:
    return list(range(n))


@step(enable_cache=False)
def worker(value: int) -> int:
    return value * 2


@step(enable_cache=False)
def reduce_sum(values: list[int]) -> int:
    return sum(values)


@step(enable_cache=False)
def sleeper(i: int) -> int:
    time.sleep(0.5)
    return i


# Pipelines live at module level: ZenML finds a pipeline's code by its module and name.
@pipeline(dynamic=True, enable_cache=False)
def chain_pipeline(k: int) -> None:
    x = start()
    for _ in range(k):
        x = add_one(x)


@pipeline(dynamic=True, enable_cache=False)
def map_reduce(n: int) -> None:
    reduce_sum(worker.map(produce(n)))


@pipeline(dynamic=True, enable_cache=False)
def concurrent(n: int) -> None:
    futures = [sleeper.submit(i) for i in range(n)]
    for future in futures:
        future.result()


@pipeline(enable_cache=False)
def static_three() -> None:
    add_one(add_one(start()))


WORKLOADS = {
    "chain": lambda k: chain_pipeline(k),
    "map": lambda n: map_reduce(n),
    "submitted": lambda n: concurrent(n),
    "process": lambda _: static_three(),
}

if __name__ == "__main__":
    name, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    began = time.perf_counter()
    WORKLOADS[name](size)
    seconds = time.perf_counter() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "peak_rss_mb": peak_mb}, f)
