"""The peer workloads as plain Python: the same functions, each result pickled to its own file.

The physical floor the frameworks are compared with (no framework, no metadata, no logs).
Usage: ``python plain.py WORKLOAD SIZE OUT_JSON``; results go to a fresh folder under
``PLAIN_SCRATCH``.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from typing import Any

SCRATCH = os.environ.get("PLAIN_SCRATCH", ".")
_names = count()  # next() on a count is atomic under the GIL: threads get distinct files


def keep(value: Any) -> Any:
    with open(os.path.join(SCRATCH, f"{next(_names)}.pkl"), "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    return value


def chain(k: int) -> None:
    x = keep(0)
    for _ in range(k):
        x = keep(x + 1)


def fan_out(n: int) -> None:
    values = keep(list(range(n)))
    with ThreadPoolExecutor(16) as pool:  # unspool's default parallelism
        doubled = list(pool.map(lambda v: keep(v * 2), values))
    keep(sum(doubled))


def submitted(n: int) -> None:
    def sleeper(i: int) -> int:
        time.sleep(0.5)
        return keep(i)

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(sleeper, range(n)))


def three_steps(_: int) -> None:
    keep(keep(keep(0) + 1) + 1)


WORKLOADS = {"chain": chain, "map": fan_out, "submitted": submitted, "process": three_steps}

if __name__ == "__main__":
    name, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    began = time.perf_counter()
    WORKLOADS[name](size)
    seconds = time.perf_counter() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "peak_rss_mb": peak_mb}, f)
