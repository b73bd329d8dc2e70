"""The CLI on a big run (issue 16, target 6): ``unspool runs show`` of a run of 100,000 mapped steps.

    .venv/bin/python bench/cli.py [--steps 100000] [--home DIR] [--reps 5]

The run is a real one: a dynamic pipeline whose ``.map`` runs ``--steps`` steps (plus the
producer and the reduce), executed in its own process with ``UNSPOOL_PROGRESS=off``. That
takes about two minutes for 100,000 steps, so ``--home DIR`` keeps the store in DIR and
reuses it on the next invocation (the run's id is kept in ``DIR/bench-run.json``); without
it the store is built in a temporary folder and removed afterwards.

Each timed command is a fresh ``python -m unspool`` process (what a user types), timed from
outside: wall time, and CPU time (user + system, from ``wait4``: less sensitive to other load
on a shared machine). The median and the range over ``--reps`` are printed with the load
average, and written to ``bench/results/cli-latest.json``. Target: under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PIPELINE = textwrap.dedent("""
    import json, sys
    from unspool import pipeline, step

    @step
    def produce(n: int) -> list[int]:
        return list(range(n))

    @step
    def worker(x: int) -> int:
        return x * 2

    @step
    def reduce_sum(values: list[int]) -> int:
        return sum(values)

    @pipeline(dynamic=True)
    def cli_bench(n: int) -> None:
        reduce_sum(worker.map(produce(n)))

    run = cli_bench(int(sys.argv[1]))
    json.dump({"run_id": run.id, "steps": len(run.steps), "status": run.status.value}, open(sys.argv[2], "w"))
""")


def build(home: Path, steps: int) -> dict[str, Any]:
    """The run of ``steps`` mapped steps in ``home``: made once, then read from ``bench-run.json``."""
    marker = home / "bench-run.json"
    if marker.exists():
        made = json.loads(marker.read_text())
        if made.get("mapped") == steps:
            return made
    home.mkdir(parents=True, exist_ok=True)
    script = home / "bench_pipeline.py"
    script.write_text(PIPELINE)
    start = time.perf_counter()
    subprocess.run([sys.executable, str(script), str(steps), str(marker)], env=_env(home), check=True)
    made = {**json.loads(marker.read_text()), "mapped": steps, "build_s": round(time.perf_counter() - start, 1)}
    marker.write_text(json.dumps(made))
    return made


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "UNSPOOL_HOME": str(home), "UNSPOOL_PROGRESS": "off"}


def timed(args: list[str], home: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``python -m unspool ARGS`` process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "unspool", *args], env=_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"unspool {' '.join(args)} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="mapped steps in the run")
    parser.add_argument("--home", type=Path, help="keep (and reuse) the run's store here")
    parser.add_argument("--reps", type=int, default=5)
    options = parser.parse_args()
    home = options.home or Path(tempfile.mkdtemp(prefix="unspool-bench-cli-"))
    try:
        made = build(home, options.steps)
        run_id, total = made["run_id"], made["steps"]
        middle = max(1, total // 50 // 2)
        commands = {  # pages of 50 steps, the default
            "runs show RUN (first page)": ["runs", "show", run_id],
            f"runs show RUN --page {middle} (mid-run)": ["runs", "show", run_id, "--page", str(middle)],
            "runs list": ["runs", "list"],
        }
        load_start = os.getloadavg()
        results = {}
        for label, args in commands.items():
            timed(args, home)  # warm the page cache: the figures are for a store that is in use
            samples = [timed(args, home) for _ in range(options.reps)]
            walls, cpus = [w for w, _ in samples], [c for _, c in samples]
            results[label] = {"wall_median_s": statistics.median(walls), "wall_min_s": min(walls),
                              "wall_max_s": max(walls), "cpu_median_s": statistics.median(cpus)}
        load_end = os.getloadavg()
    finally:
        if options.home is None:
            shutil.rmtree(home, ignore_errors=True)
    print(f"run of {total:,} steps (built in {made.get('build_s', '?')} s); load average "
          f"{load_start[0]:.2f} at start, {load_end[0]:.2f} at end; {options.reps} fresh processes each")
    for label, r in results.items():
        print(f"  {label:<36} wall {r['wall_median_s']:.2f} s ({r['wall_min_s']:.2f}-{r['wall_max_s']:.2f})"
              f"  cpu {r['cpu_median_s']:.2f} s  target < 1 s")
    out = BENCH / "results" / "cli-latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": total, "reps": options.reps,
        "loadavg_start": load_start, "loadavg_end": load_end, "results": results,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
