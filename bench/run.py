"""The unspool benchmark suite (issue 5). See bench/README.md.

    .venv/bin/python bench/run.py [--quick] [--only W2[,W4]] [--reps N]

Every repetition of every workload runs in a fresh ``python`` process
(``bench/workloads.py``) on fresh stores (a new temporary ``UNSPOOL_HOME``), with
``UNSPOOL_PROGRESS=off`` and nothing else turned off. Each workload's lower bound (the same
work as plain Python) is measured in the same run, repetition by repetition, interleaved
with it. Results: one table on the console, and the same as JSON in
``bench/results/<timestamp>.json`` and ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
WORKLOADS = BENCH / "workloads.py"
PYTHON = sys.executable

MS = 1e-3


# -- running one process -------------------------------------------------------------------------

class BenchError(Exception):
    """A benchmark process failed (or did not do what its workload says)."""


@dataclass
class Sample:
    wall: float  # seconds from spawn to exit, measured here
    peak_rss_mb: float  # of the child, from wait4
    cpu: float  # user + system seconds of the child, from wait4 (robust to a busy machine)
    report: dict[str, Any] = field(default_factory=dict)  # what the workload wrote
    store: dict[str, Any] = field(default_factory=dict)  # bytes found under UNSPOOL_HOME

    @property
    def seconds(self) -> float:
        """In-process time around the pipeline call when reported, else the process wall time."""
        return float(self.report.get("seconds", self.wall))


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # A user's interpreter caches compiled modules (.pyc); a shell that forbids it would make
    # every workload process recompile unspool's sources and measure that instead.
    for var in ("UNSPOOL_STORE_URL", "UNSPOOL_ARTIFACT_STORE", "PYTHONDONTWRITEBYTECODE"):
        env.pop(var, None)
    env["UNSPOOL_HOME"] = str(home)
    env["UNSPOOL_PROGRESS"] = "off"
    return env


def spawn(argv: list[str], home: Path, *, report: bool = True) -> Sample:
    """Run one process with ``home`` as UNSPOOL_HOME; return its timings and peak RSS."""
    home.mkdir(parents=True, exist_ok=True)
    out_json = home.parent / f"{home.name}-report.json"
    log = home.parent / f"{home.name}-output.log"
    argv = [*argv, str(out_json)] if report else argv
    with open(log, "wb") as log_file:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=_env(home), stdout=log_file, stderr=subprocess.STDOUT, cwd=home.parent)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise BenchError(f"benchmark process failed ({proc.returncode}): {' '.join(argv)}\n{tail}")
    data = json.loads(out_json.read_text()) if report else {}
    return Sample(wall=wall, peak_rss_mb=usage.ru_maxrss / 1024, cpu=usage.ru_utime + usage.ru_stime, report=data)


def store_bytes(home: Path) -> dict[str, Any]:
    """Bytes the run left in the metadata store and the artifact store."""
    db = home / "unspool.db"
    on_disk = sum(p.stat().st_size for p in home.glob("unspool.db*"))
    if db.exists():  # the database as a user keeps it: after SQLite folds the WAL back in
        con = sqlite3.connect(db)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
    files = 0
    size = 0
    blocks = 0
    dirs = 0
    for dirpath, _, filenames in os.walk(home / "artifacts"):
        dirs += 1
        blocks += os.stat(dirpath).st_blocks * 512
        for name in filenames:
            st = os.stat(os.path.join(dirpath, name))
            files += 1
            size += st.st_size
            blocks += st.st_blocks * 512
    return {
        "metadata_bytes": db.stat().st_size if db.exists() else 0,
        "metadata_bytes_with_wal": on_disk,
        "artifact_bytes": size,
        "artifact_disk_bytes": blocks,  # allocated blocks of files and directories
        "artifact_files": files,
        "artifact_dirs": dirs,
    }


class Scratch:
    """A temporary folder for one measurement; every repetition gets its own UNSPOOL_HOME."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="unspool-bench-"))
        self.n = 0

    def home(self) -> Path:
        self.n += 1
        return self.root / f"home{self.n}"

    def clean(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def workload(name: str, size: int) -> list[str]:
    return [PYTHON, str(WORKLOADS), name, str(size)]


# -- the plan ----------------------------------------------------------------------------------------

@dataclass
class Measure:
    """One workload at one size, and its plain-Python lower bound."""

    key: str  # e.g. "W2/10000"
    group: str  # W0..W5
    label: str
    size_label: str
    argv: list[str] | None  # None: special-cased (W4)
    lb_argv: list[str]
    reps: int
    report: bool = True  # False: a bare command, timed from outside (W0 import)
    steps: int | None = None
    samples: list[Sample] = field(default_factory=list)
    lb_samples: list[Sample] = field(default_factory=list)
    error: str | None = None


def plan(quick: bool, reps: int | None) -> list[Measure]:
    def r(full: int, fast: int) -> int:
        return reps if reps is not None else (fast if quick else full)

    w2_sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    w5_mb = 20 if quick else 100
    out = [
        Measure("W0/import", "W0", "start-up: import unspool", "python -c",
                [PYTHON, "-c", "import unspool"], [PYTHON, "-c", "pass"], r(10, 5), report=False),
        Measure("W0/process", "W0", "start-up: process, 3-step static", "3 steps",
                workload("w0_process", 3), workload("lb_w0_process", 3), r(7, 3), steps=3),
    ]
    for mode in ("dynamic", "static"):
        for k in (100, 1_000):
            out.append(Measure(f"W1/{mode}/{k}", "W1", f"chain, {mode}", f"K={k:,}",
                               workload(f"w1_{mode}", k), workload("lb_w1", k), r(5, 3), steps=k))
    for n in w2_sizes:
        out.append(Measure(f"W2/{n}", "W2", "fan-out .map", f"N={n:,}", workload("w2_fan_out", n),
                           workload("lb_w2", n), r(5 if n <= 1_000 else 3 if n <= 10_000 else 1, 3 if n <= 1_000 else 1),
                           steps=n + 2))
    # W2M: one run of a million mapped steps (~10 GB of disk while it runs). Only with --only W2M.
    out.append(Measure("W2M/1000000", "W2M", "fan-out .map, one run", "N=1,000,000",
                       workload("w2_fan_out", 1_000_000), workload("lb_w2", 1_000_000), 1, steps=1_000_002))
    out.append(Measure("W3", "W3", "concurrency, 8 × sleep 0.5 s", "8 steps", workload("w3_concurrency", 8),
                       workload("lb_w3", 8), r(5, 3), steps=8))
    out.append(Measure("W4", "W4", "cache: W2 again, all hits", "N=10,000", None,
                       workload("lb_w4", 10_000), r(3, 1), steps=10_002))
    out.append(Measure("W5", "W5", f"payload chain, {w5_mb} MB array", f"10 × {w5_mb} MB",
                       workload("w5_payload", w5_mb), workload("lb_w5", w5_mb), r(5, 3), steps=10))
    return out


# -- executing the plan ----------------------------------------------------------------------------------

def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def execute(measures: list[Measure]) -> None:
    """Run every repetition; a workload that fails is reported and the others still run."""
    by_key = {m.key: m for m in measures}
    w4 = by_key.get("W4")
    w2_10k = by_key.get("W2/10000")
    for m in measures:
        if m is w4:
            continue
        scratch = Scratch()
        try:
            for i in range(m.reps):
                home = scratch.home()
                sample = spawn(m.argv, home, report=m.report)  # type: ignore[arg-type]
                if m.group in ("W2", "W2M"):
                    sample.store = store_bytes(home)
                if m.group == "W2M":  # its records are queryable: `runs show` in a new process
                    sample.report["runs_show_s"] = _runs_show(home, sample.report["run_id"])
                m.samples.append(sample)
                if m is w2_10k and w4 is not None and i < w4.reps and w4.error is None:
                    _w4_rep(w4, home)  # W4 = this store, run again in a new process
                lb = spawn(m.lb_argv, scratch.home(), report=m.report)
                m.lb_samples.append(lb)
                shutil.rmtree(scratch.root, ignore_errors=True)
                scratch.root.mkdir()
                say(f"  {m.key:<18} rep {i + 1}/{m.reps}: {_fmt_s(sample.seconds)}  (plain {_fmt_s(lb.seconds)})")
        except BenchError as exc:
            m.error = str(exc)
            say(f"  {m.key}: FAILED\n{exc}")
        finally:
            scratch.clean()
    if w4 is not None and w4.error is None:  # reps that W2/10000 did not already prime
        scratch = Scratch()
        try:
            while len(w4.samples) < w4.reps:
                home = scratch.home()
                say(f"  W4 priming: W2 N=10,000 in {home}")
                spawn(workload("w2_fan_out", 10_000), home)
                _w4_rep(w4, home)
                shutil.rmtree(home, ignore_errors=True)
        except BenchError as exc:
            w4.error = str(exc)
        finally:
            scratch.clean()
    for m in measures:  # a failed workload keeps no partial figures
        if m.error is not None or len(m.samples) != len(m.lb_samples) or not m.samples:
            m.error = m.error or "incomplete"
            m.samples, m.lb_samples = [], []


def _runs_show(home: Path, run_id: str) -> float:
    """Wall seconds of ``unspool runs show RUN_ID`` (default paging) in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run([PYTHON, "-m", "unspool", "runs", "show", run_id], env=_env(home),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"runs show failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return seconds


def _w4_rep(w4: Measure, primed_home: Path) -> None:
    try:
        sample = spawn(workload("w4_cached", 10_000), primed_home)
        counts = sample.report.get("step_counts", {})
        if counts.get("cached") != w4.steps:
            raise BenchError(f"W4: expected {w4.steps} cached steps, got {counts}")
        lb_scratch = Scratch()
        try:
            lb = spawn(w4.lb_argv, lb_scratch.home())
        finally:
            lb_scratch.clean()
    except BenchError as exc:
        w4.error = str(exc)
        say(f"  W4: FAILED\n{exc}")
        return
    w4.samples.append(sample)
    w4.lb_samples.append(lb)
    say(f"  {w4.key:<18} rep {len(w4.samples)}/{w4.reps}: {_fmt_s(sample.seconds)}  (plain {_fmt_s(lb.seconds)})")


# -- summarising -------------------------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return statistics.median(values)


def summarise(measures: list[Measure], quick: bool) -> list[dict[str, Any]]:
    by_key = {m.key: m for m in measures}
    rows: list[dict[str, Any]] = []

    def med(m: Measure) -> float:
        return _median([s.seconds for s in m.samples])

    def lb_samples(m: Measure) -> list[Sample]:
        # W1's lower bound is one workload (a plain loop); pool what both modes measured
        if m.group == "W1":
            return [s for other in measures if other.group == "W1" and other.steps == m.steps for s in other.lb_samples]
        return m.lb_samples

    def lb_med(m: Measure) -> float:
        return _median([s.seconds for s in lb_samples(m)])

    def cpu(m: Measure) -> float:
        return _median([s.cpu for s in m.samples])

    def lb_cpu(m: Measure) -> float:
        return _median([s.cpu for s in lb_samples(m)])

    for m in measures:
        if m.error is not None:
            rows.append({
                "key": m.key, "workload": f"{m.group} {m.label}", "size": m.size_label, "reps": 0,
                "median_s": None, "min_s": None, "max_s": None, "per_step_s": None, "peak_rss_mb": None,
                "lower_bound_s": None, "ratio": None, "target": "failed", "target_ok": False,
                "error": m.error, "notes": "workload failed: " + m.error.strip().splitlines()[-1][:80],
            })
            continue
        times = [s.seconds for s in m.samples]
        row: dict[str, Any] = {
            "key": m.key,
            "workload": f"{m.group} {m.label}",
            "size": m.size_label,
            "reps": len(times),
            "median_s": med(m),
            "min_s": min(times),
            "max_s": max(times),
            "samples_s": times,
            "per_step_s": None,
            "peak_rss_mb": max(s.peak_rss_mb for s in m.samples),
            "process_cpu_s": _median([s.cpu for s in m.samples]),
            "process_wall_s": _median([s.wall for s in m.samples]),
            "lower_bound_process_cpu_s": lb_cpu(m),
            "run_s": _median([s.report["run_s"] for s in m.samples]) if m.samples[0].report.get("run_s") is not None else None,
            "lower_bound_s": lb_med(m),
            "lower_bound_samples_s": [s.seconds for s in lb_samples(m)],
            "ratio": med(m) / lb_med(m) if lb_med(m) > 0 else None,
            "target": None,
            "target_ok": None,
            "notes": "",
            "timing": "in-process, around the pipeline call" if m.report and m.key != "W0/process" else "process wall time",
        }
        if m.key == "W0/process":  # the whole process is the point here
            row["median_s"] = _median([s.wall for s in m.samples])
            row["min_s"] = min(s.wall for s in m.samples)
            row["max_s"] = max(s.wall for s in m.samples)
            row["samples_s"] = [s.wall for s in m.samples]
            row["lower_bound_s"] = _median([s.wall for s in m.lb_samples])
            row["lower_bound_samples_s"] = [s.wall for s in m.lb_samples]
            row["ratio"] = row["median_s"] / row["lower_bound_s"]
            row["notes"] = f"pipeline call alone {_fmt_s(med(m))}"
        if m.key == "W0/import":
            row["target"], row["target_ok"] = "≤ 150 ms", row["median_s"] <= 0.150
        elif m.key == "W0/process":
            row["target"], row["target_ok"] = "≤ 0.5 s", row["median_s"] <= 0.5
        elif m.group == "W1" and m.key.endswith("/1000"):
            small = by_key.get(m.key[: -len("1000")] + "100")
            if small is not None and small.samples:
                per = (med(m) - med(small)) / 900
                lb_per = (lb_med(m) - lb_med(small)) / 900
                per_cpu = (cpu(m) - cpu(small)) / 900
                lb_per_cpu = (lb_cpu(m) - lb_cpu(small)) / 900
                row["per_step_s"] = per
                row["per_step_lower_bound_s"] = lb_per
                row["per_step_cpu_s"] = per_cpu
                row["per_step_lower_bound_cpu_s"] = lb_per_cpu
                row["notes"] = (f"(T(1000)−T(100))/900; plain {lb_per / MS:.3f} ms/step; "
                                f"CPU {per_cpu / MS:.2f} ms/step (plain {lb_per_cpu / MS:.3f})")
                row["target"], row["target_ok"] = "≤ 1 ms/step", per <= 1 * MS
        elif m.group in ("W2", "W2M"):
            n = m.steps or 1
            row["per_step_s"] = row["median_s"] / n
            store = {k: _median([s.store[k] for s in m.samples]) for k in m.samples[0].store}
            row["store"] = store
            row["metadata_bytes_per_step"] = store["metadata_bytes"] / n
            row["artifact_bytes_per_step"] = store["artifact_bytes"] / n
            row["artifact_files_per_step"] = store["artifact_files"] / n
            row["artifact_disk_bytes_per_step"] = store["artifact_disk_bytes"] / n
            row["notes"] = (
                f"db {_fmt_b(store['metadata_bytes'] / n)}/step; artifacts "
                f"{_fmt_b(store['artifact_bytes'] / n)}/step in {store['artifact_files'] / n:.1f} files "
                f"({_fmt_b(store['artifact_disk_bytes'] / n)}/step on disk with directories)"
            )
            if m.key == "W2/10000":
                ok_t, ok_m = row["median_s"] <= 1.5, row["peak_rss_mb"] <= 300
                row["target"] = f"≤ 1.5 s {_mark(ok_t)} · ≤ 300 MB {_mark(ok_m)}"
                row["target_ok"] = ok_t and ok_m
            elif m.key == "W2/100000":
                ok_t, ok_m = row["median_s"] <= 15, row["peak_rss_mb"] <= 300
                row["target"] = f"≤ 15 s {_mark(ok_t)} · ≤ 300 MB {_mark(ok_m)}"
                row["target_ok"] = ok_t and ok_m
            elif m.group == "W2M":
                shown = _median([s.report.get("runs_show_s", float("nan")) for s in m.samples])
                ok_t, ok_m, ok_q = row["median_s"] <= 180, row["peak_rss_mb"] <= 1536, shown <= 1
                row["runs_show_s"] = shown
                row["target"] = f"≤ 3 min {_mark(ok_t)} · ≤ 1.5 GB {_mark(ok_m)} · runs show ≤ 1 s {_mark(ok_q)}"
                row["target_ok"] = ok_t and ok_m and ok_q
                row["notes"] += f"; runs show {_fmt_s(shown)}"
        elif m.key == "W3":
            row["target"], row["target_ok"] = "≤ 0.6 s", row["median_s"] <= 0.6
            row["notes"] = f"the run itself (as recorded) {_fmt_s(row['run_s'])}"
        elif m.key == "W4":
            row["per_step_s"] = row["median_s"] / (m.steps or 1)
            row["notes"] = "plain: hash each call, find its pickle"
            row["target"], row["target_ok"] = "≤ 5 s", row["median_s"] <= 5
        elif m.key == "W5":
            row["per_step_s"] = row["median_s"] / (m.steps or 1)
            row["notes"] = f"plain np.save/np.load {_fmt_s(row['lower_bound_s'] / (m.steps or 1))}/step"
            ok = row["ratio"] is not None and row["ratio"] <= 1.5
            row["target"], row["target_ok"] = "≤ 1.5 × plain", ok
        if m.group == "W1" and m.key.endswith("/100"):
            row["notes"] = "fixed cost: store open, run row, client read-back"
        rows.append(row)

    # scaling of the fan-out: T(10N)/T(N)
    w2 = sorted((m for m in measures if m.group == "W2" and m.samples), key=lambda m: m.steps or 0)
    for small, big in zip(w2, w2[1:]):
        ratio = med(big) / med(small)
        lb_ratio = lb_med(big) / lb_med(small)
        rows.append({
            "key": f"W2/scaling/{small.steps and small.steps - 2}",
            "workload": "W2 fan-out scaling T(10N)/T(N)",
            "size": f"{small.size_label} → {big.size_label}",
            "reps": min(len(small.samples), len(big.samples)),
            "median_s": None, "min_s": None, "max_s": None, "per_step_s": None,
            "peak_rss_mb": None, "lower_bound_s": None,
            "scaling": ratio, "lower_bound_scaling": lb_ratio,
            "ratio": None,
            "target": "≤ 11", "target_ok": ratio <= 11,
            "notes": f"T(10N)/T(N) = {ratio:.2f} (plain {lb_ratio:.2f})",
        })
    return rows


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("✓" if ok else "✗")


def _fmt_s(v: float | None) -> str:
    if v is None:
        return ""
    if v < 1e-3:
        return f"{v * 1e6:.0f} µs"
    if v < 1:
        return f"{v * 1e3:.1f} ms" if v < 0.1 else f"{v * 1e3:.0f} ms"
    return f"{v:.2f} s"


def _fmt_b(v: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if v < 1024:
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TB"


COLUMNS = ["workload", "size", "median", "min–max", "per step", "peak RSS", "plain (lower bound)",
           "× plain", "target", "", "notes"]


def cells(row: dict[str, Any]) -> list[str]:
    if row.get("scaling") is not None:
        return [row["workload"], row["size"], f"{row['scaling']:.2f}", "", "", "", f"{row['lower_bound_scaling']:.2f}",
                "", row["target"], _mark(row["target_ok"]), ""]
    if row.get("error") is not None:
        return [row["workload"], row["size"], "failed", "", "", "", "", "", "", "✗", row["notes"]]
    return [
        row["workload"],
        row["size"],
        _fmt_s(row["median_s"]),
        f"{_fmt_s(row['min_s'])} – {_fmt_s(row['max_s'])}",
        _fmt_s(row["per_step_s"]),
        f"{row['peak_rss_mb']:.0f} MB",
        _fmt_s(row["lower_bound_s"]),
        f"{row['ratio']:.1f}×" if row["ratio"] is not None else "",
        row["target"] or "",
        _mark(row["target_ok"]),
        row["notes"],
    ]


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for name in COLUMNS:
        numeric = name in ("median", "min–max", "per step", "peak RSS", "plain (lower bound)", "× plain")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=name != "notes")
    for row in rows:
        table.add_row(*cells(row))
    console = Console(width=None if sys.stdout.isatty() else 220)
    console.print(table)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(c or "ok" for c in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        if dirty:
            commit += "+uncommitted changes in src"
    except OSError:
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "load_average": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions (< 2 minutes)")
    parser.add_argument("--only", help="comma-separated workload groups, e.g. W2 or W1,W3")
    parser.add_argument("--reps", type=int, help="repetitions of every workload (default: per workload)")
    parser.add_argument("--markdown", metavar="JSON", help="print a results JSON file as a markdown table and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        data = json.loads(Path(args.markdown).read_text())
        info = data["machine"]
        print(f"`bench/run.py{' --quick' if data['mode'] == 'quick' else ''}` at {data['timestamp']} "
              f"(commit {info['git_commit']}, {data['elapsed_s']:.0f} s): nproc {info['nproc']}, "
              f"{info['cpu_model']}, Python {info['python']}, load average "
              f"{info['load_average'][0]:.1f} at start, {info['load_average_end'][0]:.1f} at end.\n")
        print(markdown(data["rows"]))
        return 0
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    measures = plan(args.quick, args.reps)
    if args.only:
        wanted = {g.strip().upper() for g in args.only.split(",") if g.strip()}
        unknown = wanted - {m.group for m in measures}
        if unknown:
            parser.error(f"unknown workload(s) {sorted(unknown)}; choose from W0..W5, W2M")
        measures = [m for m in measures if m.group in wanted]
    else:  # the million-step run only when asked for by name
        measures = [m for m in measures if m.group != "W2M"]

    started = time.time()
    info = machine()
    say(f"unspool bench ({'quick' if args.quick else 'full'}): {info['nproc']} × {info['cpu_model']}, Python {info['python']}")
    if info["load_average"][0] > 0.5 * (info["nproc"] or 1):
        say(f"warning: load average {info['load_average'][0]:.1f} on {info['nproc']} cores; timings will be noisy")
    subprocess.run([PYTHON, "-c", "import unspool, numpy"], check=True)  # warm the bytecode caches once
    execute(measures)
    rows = summarise(measures, args.quick)
    elapsed = time.time() - started
    info["load_average_end"] = list(os.getloadavg())
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    title = f"unspool bench {'--quick ' if args.quick else ''}{stamp} ({elapsed:.0f} s, {info['nproc']} × {info['cpu_model']}, Python {info['python']})"
    print_table(rows, title)
    result = {
        "timestamp": stamp,
        "mode": "quick" if args.quick else "full",
        "only": args.only,
        "reps_override": args.reps,
        "elapsed_s": elapsed,
        "machine": info,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    (RESULTS / f"{stamp}.json").write_text(text)
    (RESULTS / "latest.json").write_text(text)
    missed = [r["key"] for r in rows if r.get("target_ok") is False]
    say(f"results: {RESULTS / (stamp + '.json')} (and latest.json); "
        + (f"targets missed: {', '.join(missed)}" if missed else "all measured targets met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
