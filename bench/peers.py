"""unspool beside its peers: the same workloads through plain Python, unspool, Prefect and ZenML.

``make bench-peers`` (or ``python bench/peers.py``) installs each peer into a virtual
environment of its own under ``.bench-venvs/`` (pinned versions, never the project's
environment), then runs every workload in a fresh process with a fresh home for each
framework, ``--reps`` times, and writes ``bench/results/peers-latest.json`` plus the markdown
table the README quotes.

The ZenML script is ``peer_flows/zenml_api.py`` with only its import line changed: the same
code runs on unspool and on ZenML. Prefect runs ``peer_flows/prefect_flows.py`` (the same
work as flows of tasks) and plain Python ``peer_flows/plain.py`` (the functions, each result
pickled to its own file: the floor). Times are ``perf_counter`` around the pipeline call inside
the process, except "import", which times ``python -c "import X"`` from outside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLOWS = HERE / "peer_flows"
VENVS = ROOT / ".bench-venvs"
RESULTS = HERE / "results"

# Pinned. Prefect 3.8.8 lets FastAPI float, and FastAPI 0.165 no longer accepts the arguments
# Prefect's server passes it, so its FastAPI is pinned to a release that does.
PEERS = {"prefect": ["prefect==3.8.8", "fastapi==0.139.2"], "zenml": ["zenml[local]==0.98.0"]}
IMPORTS = {"plain": "pickle", "unspool": "unspool", "prefect": "prefect", "zenml": "zenml"}
FRAMEWORKS = ("plain", "unspool", "prefect", "zenml")

# (workload, size): every framework runs every one; a failure is recorded as such, from a real attempt
ROWS: list[tuple[str, int]] = [("chain", 50), ("chain", 400), ("map", 1_000), ("map", 10_000),
                               ("submitted", 8), ("process", 3)]
TIMEOUT_S = 900


def python_of(framework: str) -> str:
    if framework in PEERS:
        return str(VENVS / framework / "bin" / "python")
    return sys.executable


def install(framework: str) -> None:
    venv = VENVS / framework
    marker = venv / (".installed-" + "+".join(PEERS[framework]))
    if marker.exists():
        return
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *PEERS[framework]], check=True)
    marker.touch()


def script_for(framework: str, scratch: Path) -> Path:
    if framework == "plain":
        return FLOWS / "plain.py"
    if framework == "prefect":
        return FLOWS / "prefect_flows.py"
    source = (FLOWS / "zenml_api.py").read_text()
    if framework == "zenml":
        line = "from unspool import pipeline, step  # the one line the ZenML copy changes"
        assert source.count(line) == 1
        source = source.replace(line, "from zenml import pipeline, step")
    path = scratch / f"{framework}_flows.py"
    path.write_text(source)
    return path


def fresh_env(framework: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNSPOOL_", "PREFECT_", "ZENML_"))}
    env.update({
        "UNSPOOL_HOME": str(home / "unspool"), "UNSPOOL_PROGRESS": "off",
        "PREFECT_HOME": str(home / "prefect"),
        "ZENML_CONFIG_PATH": str(home / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false",
        "AUTO_OPEN_DASHBOARD": "false",
        "PLAIN_SCRATCH": str(home / "plain"),
    })
    (home / "plain").mkdir(parents=True, exist_ok=True)
    return env


def run_once(framework: str, workload: str, size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"peers-{framework}-") as tmp:
        home = Path(tmp)
        out = home / "out.json"
        script = script_for(framework, home)
        began = time.perf_counter()
        try:
            done = subprocess.run(
                [python_of(framework), str(script), workload, str(size), str(out)],
                env=fresh_env(framework, home), cwd=home, capture_output=True, text=True, timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"no result after {TIMEOUT_S} s"}
        wall = time.perf_counter() - began
        if not out.exists():  # the workload did not finish: say what the framework printed last
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            errors = [line for line in lines if "Error" in line or "Exception" in line]
            return {"error": ((errors or lines)[-1] if lines else f"exit code {done.returncode}")[:300]}
        result = json.loads(out.read_text())
        result["process_s"] = wall
        if done.returncode != 0:  # finished its work, then failed on the way out (kept, and said)
            result["exit_code"] = done.returncode
        return result


def import_time(framework: str, reps: int) -> dict[str, Any]:
    times = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            done = subprocess.run([python_of(framework), "-c", f"import {IMPORTS[framework]}"],
                                  env=fresh_env(framework, Path(tmp)), capture_output=True)
            if done.returncode != 0:
                return {"error": done.stderr.decode().strip().splitlines()[-1][:300]}
            times.append(time.perf_counter() - began)
    return {"median_s": statistics.median(times), "all_s": times}


def measure(framework: str, workload: str, size: int, reps: int) -> dict[str, Any]:
    results = [run_once(framework, workload, size) for _ in range(reps)]
    failures = [r["error"] for r in results if "error" in r]
    if failures:  # one failure is enough to say the framework does not do this reliably
        return {"error": failures[0], "failed": len(failures), "of": reps}
    seconds = [r["seconds"] for r in results]
    return {
        "median_s": statistics.median(seconds), "all_s": seconds,
        "process_s": statistics.median(r["process_s"] for r in results),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
    }


def fmt_seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def table(data: dict[str, Any]) -> str:
    figures = data["figures"]
    frameworks = data["frameworks"]
    lines = [
        "| workload | " + " | ".join(frameworks) + " |",
        "|---|" + "---|" * len(frameworks),
    ]

    def cell(fw: str, value: float | None, plain: float | None) -> str:
        if value is None:
            return "fails"
        ratio = f" ({value / plain:.1f}×)" if plain and fw != "plain" else ""
        return f"{fmt_seconds(value)}{ratio}"

    def get(fw: str, key: str) -> float | None:
        entry = figures[fw].get(key, {})
        return None if "error" in entry else entry.get("median_s")

    # the marginal cost of a step in a chain: (T(400) - T(50)) / 350
    per_step = {}
    for fw in frameworks:
        small, large = get(fw, "chain/50"), get(fw, "chain/400")
        per_step[fw] = None if small is None or large is None else (large - small) / 350
    plain = per_step.get("plain")
    cells = []
    for fw in frameworks:
        value = per_step[fw]
        ratio = f" ({value / plain:.0f}×)" if value is not None and plain and fw != "plain" else ""
        cells.append("fails" if value is None else f"{value * 1000:.3f} ms{ratio}")
    lines.append("| chain of steps, marginal cost per step | " + " | ".join(cells) + " |")
    for key, label in (("map/1000", "map 1,000 + reduce"), ("map/10000", "map 10,000 + reduce"),
                       ("submitted/8", "8 × 0.5 s submitted"), ("process/3", "3-step static pipeline, in process")):
        plain = get("plain", key)
        cells = []
        for fw in frameworks:
            value = get(fw, key)
            text = cell(fw, value, plain)
            rss = figures[fw].get(key, {}).get("peak_rss_mb")
            if value is not None and key.startswith("map") and rss:
                text += f", {rss:.0f} MB"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for fw in frameworks:
        entry = figures[fw].get("import", {})
        cells.append("fails" if "error" in entry or not entry else fmt_seconds(entry["median_s"]))
    lines.append("| `import` in a fresh process | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default=",".join(FRAMEWORKS), help="comma-separated: plain,unspool,prefect,zenml")
    parser.add_argument("--markdown", metavar="JSON", help="print a results file as a markdown table and exit")
    args = parser.parse_args()
    if args.markdown:
        print(table(json.loads(Path(args.markdown).read_text())))
        return 0
    frameworks = [f for f in FRAMEWORKS if f in args.only.split(",")]
    for fw in frameworks:
        if fw in PEERS:
            print(f"installing {' '.join(PEERS[fw])} into {VENVS / fw} ...", flush=True)
            install(fw)
    started = time.time()
    figures: dict[str, dict[str, Any]] = {fw: {} for fw in frameworks}
    for fw in frameworks:
        figures[fw]["import"] = import_time(fw, args.reps)
        for workload, size in ROWS:
            key = f"{workload}/{size}"
            figures[fw][key] = measure(fw, workload, size, args.reps)
            entry = figures[fw][key]
            shown = entry.get("error") or fmt_seconds(entry["median_s"])
            print(f"{fw:8} {key:14} {shown}", flush=True)
    data = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()[0]},
        "versions": {"prefect": PEERS["prefect"], "zenml": PEERS["zenml"]},
        "reps": args.reps, "duration_s": round(time.time() - started), "frameworks": frameworks,
        "figures": figures,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "peers-latest.json").write_text(json.dumps(data, indent=1) + "\n")
    print()
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
