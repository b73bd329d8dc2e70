"""The demo behind `make demo`: the recursive e-mail analysis example, offline, in seconds.

A planning step decides how many chunks to analyse; every chunk is a step started at run
time and all run at once; chunks too large are split again by child pipelines; every model
call is charged to the run's spend budget. See examples/rlm_analysis/README.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "rlm_analysis"))

from rlm import rlm_analysis  # noqa: E402

from unspool import Client  # noqa: E402


def main() -> None:
    run = rlm_analysis()
    steps = [*run.steps.values(), *(s for child in run.child_runs for s in child.steps.values())]
    chunks = [s for s in steps if s.name == "analyze_chunk"]
    limits = run.config["budget"]["spend"]
    spent = run.metadata.get("spend", {})
    synthesis = Client().get_artifact_version("rlm_synthesis").load()
    cli = os.path.relpath(os.path.join(os.path.dirname(sys.executable), "unspool"))
    print(f"\nrun {run.name}: {run.status.value}")
    cached = sum(s.status.value == "cached" for s in steps)
    print(f"  {len(steps)} steps created at run time, {len(run.child_runs)} child pipelines, "
          f"{len(chunks)} chunk analyses started at once")
    if cached:
        print(f"  {cached} of them served from the cache: their model calls are not paid again")
    print("  spend: " + ", ".join(f"{k} {spent.get(k, 0)}/{v}" for k, v in limits.items()))
    print(f"  answer (confidence {synthesis.confidence}):")
    for finding in synthesis.findings:
        print(f"    - {finding[:110]}")
    print(f"\nstores: {Client().artifact_root.rsplit(os.sep, 1)[0]}")
    print(f"look at it with: {cli} runs show {run.id[:8]}     (steps, child runs, budget)")
    print(f"            and: {cli} runs dag {run.id[:8]}  /  {cli} logs {run.id[:8]} analyze_chunk")
    print(f"            and: {cli} artifacts show rlm_synthesis")
    print(f"watch it in the dashboard: {cli} dashboard   then open http://127.0.0.1:8237/#/runs/{run.id}")


if __name__ == "__main__":
    main()
