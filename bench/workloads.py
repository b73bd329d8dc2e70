"""One benchmark workload per process: ``python bench/workloads.py NAME SIZE OUT_JSON``.

``bench/run.py`` starts this script in a fresh interpreter for every repetition, with a
fresh ``UNSPOOL_HOME`` and ``UNSPOOL_PROGRESS=off`` (nothing else is changed: lineage, logs,
caching and status all work exactly as for a user). The script runs one workload, times it
with ``time.perf_counter`` around the pipeline call, and writes a JSON object to OUT_JSON:

    {"seconds": ..., "peak_rss_mb": ..., "steps": ..., ...}

Names starting with ``lb_`` are the lower bounds: the same work as plain Python (a loop
calling the functions and pickling every result to its own file; ``ThreadPoolExecutor.map``
for the fan-out and concurrency workloads).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any, Callable

# Everything else is imported where it is used: W0 times this whole process.

# unspool runs up to 16 steps of a run at once (DEFAULT_PARALLELISM); the thread-pool lower
# bounds get the same number of workers.
POOL_WORKERS = 16
SLEEP_S = 0.5
SLEEPERS = 8
W5_CHAIN = 10

WORKLOADS: dict[str, Callable[[int], dict[str, Any]]] = {}


def workload(fn: Callable[[int], dict[str, Any]]) -> Callable[[int], dict[str, Any]]:
    WORKLOADS[fn.__name__] = fn
    return fn


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def _step_counts(run: Any) -> dict[str, int]:
    return dict((run.metadata or {}).get("step_counts", {}))


def _report(seconds: float, steps: int, run: Any) -> dict[str, Any]:
    return {
        "seconds": seconds,  # around the pipeline call: what the user waits for
        "run_s": run.duration,  # the run as recorded: start to end, without opening the stores
        "steps": steps,
        "step_counts": _step_counts(run),
        "status": run.status.value,
        "run_id": run.id,
    }


def _scratch() -> str:
    """Where the plain-Python lower bounds write their pickles (inside the fresh home)."""
    import tempfile

    home = os.environ.get("UNSPOOL_HOME") or tempfile.mkdtemp(prefix="unspool-lb-")
    path = os.path.join(home, "plain")
    os.makedirs(path, exist_ok=True)
    return path


def _dump(path: str, value: Any) -> None:
    import pickle

    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


# -- W0: a whole process running a three-step static pipeline ---------------------------------------

@workload
def w0_process(size: int) -> dict[str, Any]:
    from unspool import pipeline, step

    @step
    def load() -> int:
        return 1

    @step
    def transform(x: int) -> int:
        return x + 1

    @step
    def evaluate(x: int) -> int:
        return x * 2

    @pipeline
    def three_steps() -> None:
        evaluate(transform(load()))

    seconds, run = _timed(three_steps)
    return _report(seconds, 3, run)


@workload
def lb_w0_process(size: int) -> dict[str, Any]:
    def load() -> int:
        return 1

    def transform(x: int) -> int:
        return x + 1

    def evaluate(x: int) -> int:
        return x * 2

    def body() -> None:
        out = _scratch()
        a = load()
        _dump(os.path.join(out, "load.pkl"), a)
        b = transform(a)
        _dump(os.path.join(out, "transform.pkl"), b)
        _dump(os.path.join(out, "evaluate.pkl"), evaluate(b))

    seconds, _ = _timed(body)
    return {"seconds": seconds, "steps": 3}


# -- W1: a chain of K sequential steps ---------------------------------------------------------------

def _chain(size: int, dynamic: bool) -> dict[str, Any]:
    from unspool import pipeline, step

    @step
    def inc(x: int) -> int:
        return x + 1

    @pipeline(dynamic=dynamic, name=f"chain_{'dynamic' if dynamic else 'static'}")
    def chain(k: int) -> None:
        x = inc(0)
        for _ in range(k - 1):
            x = inc(x)

    seconds, run = _timed(lambda: chain(size))
    return _report(seconds, size, run)


@workload
def w1_dynamic(size: int) -> dict[str, Any]:
    return _chain(size, dynamic=True)


@workload
def w1_static(size: int) -> dict[str, Any]:
    return _chain(size, dynamic=False)


@workload
def lb_w1(size: int) -> dict[str, Any]:
    def inc(x: int) -> int:
        return x + 1

    def body() -> int:
        out = _scratch()
        x = 0
        for i in range(size):
            x = inc(x)
            _dump(os.path.join(out, f"inc_{i}.pkl"), x)
        return x

    seconds, _ = _timed(body)
    return {"seconds": seconds, "steps": size}


# -- W2: fan-out with .map, and W4: the same again, all cache hits -------------------------------------

def _fan_out(size: int) -> dict[str, Any]:
    from unspool import pipeline, step

    @step
    def produce(n: int) -> list[int]:
        return list(range(n))

    @step
    def worker(x: int) -> int:
        return x + 1

    @step
    def reduce_sum(values: list[int]) -> int:
        return sum(values)

    @pipeline(dynamic=True)
    def fan_out(n: int) -> None:
        values = produce(n)
        mapped = worker.map(values)
        reduce_sum(mapped)

    seconds, run = _timed(lambda: fan_out(size))
    return _report(seconds, size + 2, run)


@workload
def w2_fan_out(size: int) -> dict[str, Any]:
    return _fan_out(size)


@workload
def w4_cached(size: int) -> dict[str, Any]:
    # Run by bench/run.py in a second process on the store a w2_fan_out run just filled.
    return _fan_out(size)


@workload
def lb_w2(size: int) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    def produce(n: int) -> list[int]:
        return list(range(n))

    def worker(x: int) -> int:
        return x + 1

    def body() -> int:
        out = _scratch()
        values = produce(size)
        _dump(os.path.join(out, "produce.pkl"), values)

        def task(item: tuple[int, int]) -> int:
            i, x = item
            y = worker(x)
            _dump(os.path.join(out, f"worker_{i}.pkl"), y)
            return y

        with ThreadPoolExecutor(max_workers=POOL_WORKERS) as pool:
            results = list(pool.map(task, enumerate(values)))
        total = sum(results)
        _dump(os.path.join(out, "reduce.pkl"), total)
        return total

    seconds, _ = _timed(body)
    return {"seconds": seconds, "steps": size + 2}


@workload
def lb_w4(size: int) -> dict[str, Any]:
    """Plain on-disk memoisation: hash each call's function and input, find its pickle."""
    import hashlib
    import inspect

    out = _scratch()

    def produce(n: int) -> list[int]:
        return list(range(n))

    def worker(x: int) -> int:
        return x + 1

    def reduce_sum(values: list[int]) -> int:
        return sum(values)

    sources: dict[Any, bytes] = {}

    def key(fn: Callable[..., Any], arg: Any) -> str:
        if fn not in sources:  # hashed once per function, as unspool does
            sources[fn] = hashlib.sha256(inspect.getsource(fn).encode()).digest()
        h = hashlib.sha256(sources[fn])
        h.update(repr(arg).encode())
        return os.path.join(out, h.hexdigest() + ".pkl")

    # fill the cache (not timed), as W2 did for W4
    values = produce(size)
    _dump(key(produce, size), values)
    for x in values:
        _dump(key(worker, x), worker(x))
    _dump(key(reduce_sum, size), reduce_sum([v + 1 for v in values]))

    def body() -> int:
        hits = 0
        for fn, arg in [(produce, size), *((worker, x) for x in range(size)), (reduce_sum, size)]:
            hits += os.path.exists(key(fn, arg))
        return hits

    seconds, hits = _timed(body)
    assert hits == size + 2
    return {"seconds": seconds, "steps": size + 2}


# -- W3: eight sleeping steps submitted at once ----------------------------------------------------------

@workload
def w3_concurrency(size: int) -> dict[str, Any]:
    from unspool import pipeline, step

    @step
    def sleeper(i: int) -> int:
        time.sleep(SLEEP_S)
        return i

    @pipeline(dynamic=True)
    def concurrency(n: int) -> None:
        futures = [sleeper.submit(i) for i in range(n)]
        for future in futures:
            future.result()

    # W3 measures concurrency, W0 start-up: open the stores (import SQLAlchemy, create the
    # schema) before the clock starts, as in any process that has run a pipeline before.
    from unspool import Client

    Client()
    seconds, run = _timed(lambda: concurrency(size))
    return _report(seconds, size, run)


@workload
def lb_w3(size: int) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    out = _scratch()

    def sleeper(i: int) -> int:
        time.sleep(SLEEP_S)
        _dump(os.path.join(out, f"sleeper_{i}.pkl"), i)
        return i

    def body() -> list[int]:
        with ThreadPoolExecutor(max_workers=POOL_WORKERS) as pool:
            return list(pool.map(sleeper, range(size)))

    seconds, _ = _timed(body)
    return {"seconds": seconds, "steps": size}


# -- W5: a chain passing a large numpy array ----------------------------------------------------------------

@workload
def w5_payload(size: int) -> dict[str, Any]:
    """SIZE is the array size in MB; step 1 creates it, steps 2..10 return arr + 1."""
    global np  # the step annotations below are resolved in this module's globals
    import numpy as np

    from unspool import pipeline, step

    elements = size * 1024 * 1024 // 8

    @step
    def make_array(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float64)

    @step
    def add_one(arr: np.ndarray) -> np.ndarray:
        return arr + 1

    @pipeline(dynamic=True)
    def payload(n: int) -> None:
        arr = make_array(n)
        for _ in range(W5_CHAIN - 1):
            arr = add_one(arr)

    seconds, run = _timed(lambda: payload(elements))
    return _report(seconds, W5_CHAIN, run)


@workload
def lb_w5(size: int) -> dict[str, Any]:
    """The same bytes written and read with np.save/np.load, one file per step."""
    import numpy as np

    elements = size * 1024 * 1024 // 8

    def body() -> None:
        out = _scratch()
        arr = np.zeros(elements, dtype=np.float64)
        path = os.path.join(out, "step_0.npy")
        np.save(path, arr)
        for i in range(1, W5_CHAIN):
            arr = np.load(path) + 1
            path = os.path.join(out, f"step_{i}.npy")
            np.save(path, arr)

    seconds, _ = _timed(body)
    return {"seconds": seconds, "steps": W5_CHAIN}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in WORKLOADS:
        print(f"usage: {argv[0]} {{{','.join(WORKLOADS)}}} SIZE OUT_JSON", file=sys.stderr)
        return 2
    name, size, out = argv[1], int(argv[2]), argv[3]
    result = WORKLOADS[name](size)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["workload"] = name
    result["size"] = size
    with open(out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
