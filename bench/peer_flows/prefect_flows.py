"""The peer workloads written for Prefect 3: flows of tasks, the same work as ``zenml_api.py``.

Prefect keeps its defaults (a temporary local API server and its SQLite database under the
fresh ``PREFECT_HOME`` ``bench/peers.py`` gives each process, the thread-pool task runner);
results are persisted, as unspool and ZenML always persist outputs. Usage:
``python prefect_flows.py WORKLOAD SIZE OUT_JSON``.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from prefect import flow, task


@task(persist_result=True)
def start() -> int:
    return 0


@task(persist_result=True)
def add_one(x: int) -> int:
    return x + 1


@task(persist_result=True)
def produce(n: int) -> list[int]:
    return list(range(n))


@task(persist_result=True)
def worker(value: int) -> int:
    return value * 2


@task(persist_result=True)
def reduce_sum(values: list[int]) -> int:
    return sum(values)


@task(persist_result=True)
def sleeper(i: int) -> int:
    time.sleep(0.5)
    return i


def chain(k: int) -> None:
    @flow
    def chain_flow() -> None:
        x = start()
        for _ in range(k):
            x = add_one(x)

    chain_flow()


def fan_out(n: int) -> None:
    @flow
    def map_reduce() -> None:
        reduce_sum(worker.map(produce(n)))

    map_reduce()


def submitted(n: int) -> None:
    @flow
    def concurrent() -> None:
        futures = [sleeper.submit(i) for i in range(n)]
        for future in futures:
            future.result()

    concurrent()


def three_steps(_: int) -> None:
    @flow
    def static_three() -> None:
        add_one(add_one(start()))

    static_three()


WORKLOADS = {"chain": chain, "map": fan_out, "submitted": submitted, "process": three_steps}

if __name__ == "__main__":
    name, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    began = time.perf_counter()
    WORKLOADS[name](size)
    seconds = time.perf_counter() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "peak_rss_mb": peak_mb}, f)
