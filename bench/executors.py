"""W2 and W3 on the other executors: isolated worker processes and Ray.

    .venv/bin/python bench/executors.py [--quick] [--reps N] [--only isolated,ray]

The same workloads as ``bench/workloads.py`` (W2: ``produce(n)``, ``worker.map``,
``reduce_sum``; W3: 8 ``.submit()``-ed steps sleeping 0.5 s), with the mapped/submitted
step run elsewhere:

* ``isolated``: the step is ``runtime="isolated"``, so every call is a fresh worker process
  forked from the run's zygote (``_process_executor.py``). ``produce``/``reduce_sum`` stay
  inline. The run starts its zygote; that is inside the timing.
* ``ray``: ``orchestrator={"type": "ray"}`` with the step isolated, on a local Ray instance
  (``num_cpus`` = this machine's) started in the process *before* the timing (a pipeline
  normally joins a running cluster); its start-up is reported as ``ray_init_s``. Ray starts
  its worker processes lazily, so each process runs the pipeline twice (the second run
  with ``enable_cache=False``) and reports both: ``first`` pays for worker start-up.
* ``inline``: ``bench/workloads.py`` itself (w2_fan_out, w3_concurrency), for comparison.

Isolated steps and Ray tasks ask for one CPU each unless told otherwise, so on a machine
with C CPUs W3 runs its sleepers C at a time (8/C waves of 0.5 s). ``W3light`` is W3 with
``settings={"resources": {"cpu": 0.25}}`` on the sleeper: all 8 at once.

Each repetition is a fresh process with a fresh ``UNSPOOL_HOME`` and ``UNSPOOL_PROGRESS=off``.
Results: a table, and JSON in ``bench/results/executors-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
SLEEP_S = 0.5


# -- inside one workload process ---------------------------------------------------------------------

def _pipelines(isolated: bool, orchestrator: dict[str, Any], sleeper_cpu: float = 1) -> tuple[Any, Any]:
    from unspool import pipeline, step

    runtime = "isolated" if isolated else None

    @step
    def produce(n: int) -> list[int]:
        return list(range(n))

    @step(runtime=runtime)
    def worker(x: int) -> int:
        return x + 1

    @step
    def reduce_sum(values: list[int]) -> int:
        return sum(values)

    @step(runtime=runtime, settings={"resources": {"cpu": sleeper_cpu}})
    def sleeper(i: int) -> int:
        time.sleep(SLEEP_S)
        return i

    @pipeline(dynamic=True, orchestrator=orchestrator)
    def fan_out(n: int) -> None:
        reduce_sum(worker.map(produce(n)))

    @pipeline(dynamic=True, orchestrator=orchestrator)
    def concurrency(n: int) -> None:
        for future in [sleeper.submit(i) for i in range(n)]:
            future.result()

    return fan_out, concurrency


def _timed_run(pipe: Any, size: int) -> dict[str, Any]:
    start = time.perf_counter()
    run = pipe(size)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "run_s": run.duration, "status": run.status.value,
            "step_counts": dict((run.metadata or {}).get("step_counts", {}))}


def workload(executor: str, name: str, size: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    orchestrator: dict[str, Any] = {}
    if executor == "ray":
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        report["ray_init_s"] = time.perf_counter() - start
        orchestrator = {"type": "ray"}
    fan_out, concurrency = _pipelines(True, orchestrator, sleeper_cpu=0.25 if name == "W3light" else 1)
    pipe = fan_out if name == "W2" else concurrency
    report.update(_timed_run(pipe, size))
    if executor == "ray":
        report["second"] = _timed_run(pipe.with_options(enable_cache=False), size)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


# -- the driver -----------------------------------------------------------------------------------------

def _spawn(argv: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="unspool-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("UNSPOOL_STORE_URL", "UNSPOOL_ARTIFACT_STORE")}
        env.update(UNSPOOL_HOME=os.path.join(tmp, "home"), UNSPOOL_PROGRESS="off")
        out = os.path.join(tmp, "report.json")
        start = time.perf_counter()
        proc = subprocess.run([*argv, out], env=env, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        with open(out) as f:
            report = json.load(f)
        report["wall"] = wall
        return report


def _command(executor: str, name: str, size: int) -> list[str]:
    if executor == "inline":
        return [sys.executable, str(BENCH / "workloads.py"), "w2_fan_out" if name == "W2" else "w3_concurrency", str(size)]
    return [sys.executable, str(Path(__file__).resolve()), "--workload", executor, name, str(size)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repetition each")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--only", default="inline,isolated,ray")
    parser.add_argument("--workload", nargs=4, metavar=("EXECUTOR", "NAME", "SIZE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload:
        executor, name, size, out = args.workload
        report = workload(executor, name, int(size))
        with open(out, "w") as f:
            json.dump(report, f)
        return 0

    reps = args.reps or (1 if args.quick else 3)
    executors = [e for e in args.only.split(",") if e]
    rows = []
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} reps={reps}", flush=True)
    for name, size in (("W2", 1000), ("W3", 8), ("W3light", 8)):
        for executor in executors:
            if name == "W3light" and executor == "inline":
                continue
            samples = []
            for _ in range(reps):
                samples.append(_spawn(_command(executor, name, size)))
            seconds = [s["seconds"] for s in samples]
            row = {
                "workload": name, "size": size, "executor": executor, "reps": reps,
                "median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
                "per_step_ms": statistics.median(seconds) / (size + (2 if name == "W2" else 0)) * 1000,
                "peak_rss_mb": max(s.get("peak_rss_mb", 0) for s in samples),
                "samples": samples,
            }
            if executor == "ray":
                second = [s["second"]["seconds"] for s in samples]
                row["second_run_median_s"] = statistics.median(second)
                row["ray_init_median_s"] = statistics.median(s["ray_init_s"] for s in samples)
            rows.append(row)
            extra = ""
            if executor == "ray":
                extra = f"  second run {row['second_run_median_s']:.2f}s  ray.init {row['ray_init_median_s']:.1f}s"
            print(f"{name} N={size:<5} {executor:<9} median {row['median_s']:7.2f}s "
                  f"(min {row['min_s']:.2f}, max {row['max_s']:.2f})  {row['per_step_ms']:7.1f} ms/step  "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB{extra}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    payload = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
               "load_end": os.getloadavg(), "rows": rows}
    with open(RESULTS / "executors-latest.json", "w") as f:
        json.dump(payload, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
