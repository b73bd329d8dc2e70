"""unspool's reliability suite (`make torture`): kill, race and starve real processes.

Scenarios (each bounded in count and time; ``--quick`` is a smoke-sized run):

* ``sweep``: SIGKILL an orchestrator (torture/pipeline.py) at chosen points (before steps,
  during a step, between steps, right after a step returned, during the map, inside a store
  flush) and at random moments, and also kill the resume itself; after each kill resume the
  run and compare what the effects file says ran and finished with what the store says.
* ``concurrent_resume``: two ``unspool runs resume RUN`` at once on one killed run.
* ``writers``: N processes running pipelines at once on one SQLite and on one PostgreSQL store.
* ``full_disk``: the SQLite file on a small tmpfs, then the artifact store on one.

Every check synchronises on effects (files the steps append to, marker files, store rows);
random kill delays are only the sweep's input. Figures go to ``torture/results/latest.json``
(``--out``) with a short summary on stdout. The meaning of every figure is in ``FIGURES``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PIPELINE = HERE / "pipeline.py"
BUSY = HERE / "busy.py"
PY = sys.executable
UNSPOOL = str(Path(PY).parent / "unspool")
# Children import torture/pipeline.py, and the unspool this process imports (a worktree's
# src on PYTHONPATH tests that tree, not the one installed in the environment).
PYTHONPATH = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])

sys.path.insert(0, str(HERE))
import pipeline as torture_pipeline  # noqa: E402  (the invocation list and who consumes what)

EXPECTED = torture_pipeline.invocations()
CONSUMERS = torture_pipeline.consumers()
RESUME_BOUND = 120.0  # a resume (or run) not finished after this long is a hang
WAIT_BOUND = 120.0  # how long to wait for a hold point before calling the trial broken

FIGURES = {
    "sweep": {
        "kills": "SIGKILLs that landed on a live orchestrator (first runs and resumes)",
        "trials": "runs killed at least once and then resumed to the end",
        "missed": "random kills drawn after the process had already exited (not counted as kills; a first kill is drawn again, from half the window, at most 3 times)",
        "reexecuted_after_completion": "steps that wrote their done line before a kill and were started again after it",
        "reexecuted_result_seen": "... of those, steps whose result a downstream step had already received",
        "reexecuted_recorded_completed": "... of those, steps the store held as completed at the kill (README: never)",
        "reexecuted_unfinished": "steps running (started, not done) at a kill and started again (allowed)",
        "lost_records": "steps with a done line, or completed in the store at a kill, not completed after the resume",
        "hangs": "resumes not finished within the bound (then killed)",
        "non_terminal": "runs left initializing/running after the final resume exited",
        "not_completed": "runs whose final resume did not end completed",
        "wrong_outputs": "completed runs whose `total` content hash differs from an uninterrupted run",
        "staging_left": "half-written artifact folders (.staging-*) left after the resume",
        "unresumable": "kills before the run reached the store (nothing to resume), with steps_done_unrecorded",
        "completed_run_changed": "completed runs no longer completed after a resume of them was killed",
        "completed_resume_refused": "resumes of a completed run that said so (already completed) and exited before the kill, nothing written",
        "harness_errors": "trials the harness could not place (a hold point never reached by a live process)",
    },
    "concurrent_resume": {
        "trials": "killed runs resumed by two `unspool runs resume RUN` at once, both let past the status check "
                  "before either executes ('plain': started at once, nothing else)",
        "both_executed": "trials in which both resumes executed steps",
        "double_executions": "invocations executed by both resumes (summed over trials)",
        "completed_with_failed_step": "trials whose run ended completed while a step row is failed",
        "end_states": "final run status -> trials; exit codes of the two resumes -> count",
    },
    "writers": {
        "lost_rows": "expected step rows (completed) missing after all processes exited",
        "errors": "processes exiting non-zero plus stderr lines naming an error",
        "version_anomalies": "artifact names whose version numbers have gaps or duplicates",
    },
    "full_disk": {
        "success_not_stored": "runs that exited 0 / printed 'finished' while the store lacks their records",
        "hangs": "runs still alive after the bound (15 s quick, 60 s full; then killed)",
        "non_terminal": "runs left initializing/running in the store by a process that exited by itself",
        "non_terminal_after_reap": "... still so after `unspool runs list` (which reaps runs whose process is gone)",
    },
}

_children: list[subprocess.Popen[Any]] = []
_mounts: list[Path] = []
_cleanups: list[Callable[[], None]] = []


# -- processes and files ---------------------------------------------------------------------------

def start(args: list[str], env: dict[str, str], cwd: Path, name: str) -> subprocess.Popen[Any]:
    out = open(cwd / f"{name}.out", "wb")  # noqa: SIM115 - closed right after the fork
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    proc.log = cwd / f"{name}.out"  # type: ignore[attr-defined]
    _children.append(proc)
    return proc


def kill(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the process (and its session: the orchestrator's own workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def finish(proc: subprocess.Popen[Any], bound: float) -> bool:
    """Wait for the process; False (and killed) when it is still alive after ``bound``."""
    try:
        proc.wait(timeout=bound)
        return True
    except subprocess.TimeoutExpired:
        kill(proc)
        return False


def output(proc: subprocess.Popen[Any]) -> str:
    return proc.log.read_text(errors="replace")  # type: ignore[attr-defined]


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[Any] | None = None,
             timeout: float = WAIT_BOUND) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return condition()
        time.sleep(0.01)
    return False


def markers(hold_dir: Path, prefix: str) -> list[Path]:
    return sorted(hold_dir.glob(prefix + ".*"))


def cleanup() -> None:
    for proc in _children:
        if proc.poll() is None:
            kill(proc)
    for fn in reversed(_cleanups):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - cleanup goes on
            print(f"torture: cleanup: {exc}", file=sys.stderr)
    _cleanups.clear()
    for mount in reversed(_mounts):
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    _mounts.clear()


# -- reading effects and the store -----------------------------------------------------------------

class Effects:
    def __init__(self, path: Path) -> None:
        lines = path.read_text().splitlines() if path.exists() else []
        self.starts: Counter[str] = Counter()
        self.done: set[str] = set()
        self.starters: dict[str, list[str]] = defaultdict(list)
        for line in lines:
            parts = line.split()
            if len(parts) != 3:
                continue
            kind, invocation, pid = parts
            if kind == "start":
                self.starts[invocation] += 1
                self.starters[invocation].append(pid)
            elif kind == "done":
                self.done.add(invocation)
        self.count = len(lines)


def db_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def step_statuses(db: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for invocation, status in db_rows(db, "select invocation_id, status from step_runs"):
        found[invocation].append(status)
    return found


def completed(db: Path) -> set[str]:
    return {inv for inv, sts in step_statuses(db).items() if "completed" in sts}


def run_row(db: Path) -> tuple[str, str] | None:
    rows = db_rows(db, "select id, status from pipeline_runs where parent_run_id is null")
    return rows[0] if rows else None


def total_hash(db: Path) -> str | None:
    rows = db_rows(
        db, "select av.content_hash from artifact_versions av join step_runs s on s.id = av.producer_step_run_id "
            "where s.invocation_id = 'total' and s.status = 'completed'")
    return rows[0][0] if rows else None


# -- the SIGKILL sweep -----------------------------------------------------------------------------

class Trial:
    """One fresh store, one run: started, killed one or more times, resumed to the end."""

    def __init__(self, base: Path, name: str) -> None:
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.home = self.dir / "home"
        self.effects = self.dir / "effects"
        self.holds = self.dir / "holds"
        self.holds.mkdir()
        self.db = self.home / "unspool.db"
        self.kills: list[dict[str, Any]] = []
        self.phase = 0

    def env(self, hold: str = "", mark_body: bool = False) -> dict[str, str]:
        self.phase += 1
        env = {**os.environ, "UNSPOOL_HOME": str(self.home), "EFFECTS_FILE": str(self.effects),
               "UNSPOOL_PROGRESS": "off", "HOLD": hold, "HOLD_DIR": str(self.holds),
               "RELEASE_FILE": str(self.holds / f"release-{self.phase}"), "PYTHONPATH": PYTHONPATH}
        env.pop("UNSPOOL_STORE_URL", None)
        env.pop("UNSPOOL_ARTIFACT_STORE", None)
        if mark_body:
            env["MARK_BODY"] = "1"
        return env

    def start_run(self, hold: str = "", mark_body: bool = False) -> subprocess.Popen[Any]:
        return start([PY, str(PIPELINE)], self.env(hold, mark_body), self.dir, f"run-{self.phase + 1}")

    def start_resume(self, hold: str = "", mark_body: bool = False) -> subprocess.Popen[Any]:
        row = run_row(self.db)
        assert row is not None
        code = (f"from unspool import Client; r = Client().resume_pipeline_run({row[0]!r}); "
                "print('resumed:', r.status.value)")
        return start([PY, "-c", code], self.env(hold, mark_body), self.dir, f"resume-{self.phase + 1}")

    def kill_now(self, proc: subprocess.Popen[Any], where: str) -> bool:
        """SIGKILL ``proc`` and record what had run and what the store held; False if it had exited."""
        before = completed(self.db)
        if proc.poll() is not None:
            return False
        kill(proc)
        self.kills.append({"where": where, "completed": completed(self.db) | before,
                           "effects": Effects(self.effects), "run_recorded": run_row(self.db) is not None})
        return True


def chosen_point(point: str) -> tuple[str, Callable[[Trial], bool]]:
    """HOLD value and the effect that must be true before the kill."""
    def marker(prefix: str) -> Callable[[Trial], bool]:
        return lambda t: bool(markers(t.holds, prefix))

    if point == "before_steps":
        return "body", lambda t: marker("body")(t) and run_row(t.db) is not None
    if point == "during_step":  # work_2 holds inside its body; work is recorded completed
        return "start:work_2", lambda t: marker("start-work_2")(t) and "work" in completed(t.db)
    if point == "between_steps":  # work_2 returned to the body and is recorded
        return "after:work_2", lambda t: marker("after-work_2")(t) and {"work", "work_2"} <= completed(t.db)
    if point == "after_step_returned":  # work_2 returned to the body, recorded or not
        return "after:work_2", marker("after-work_2")
    if point == "during_map":  # the third square on hold; two finished and recorded
        return "map", lambda t: (
            any(t.holds.glob("start-square*"))
            and sum(1 for s in completed(t.db) if s.startswith("square")) >= 2)
    if point.startswith("during_flush"):
        n = int(point.split(":")[1])
        return f"flush:{n}", marker(f"flush-{n}")
    raise ValueError(point)


def random_kill(trial: Trial, proc: subprocess.Popen[Any], delay: float, where: str) -> bool:
    """Kill ``delay`` seconds after the body started (the delay is the sweep's random input)."""
    if not wait_for(lambda: bool(markers(trial.holds, "body-started")) and len(markers(trial.holds, "body-started"))
                    >= trial.body_marks, proc):
        return False
    time.sleep(delay)
    return trial.kill_now(proc, where)


def held_kill(trial: Trial, proc: subprocess.Popen[Any], trigger: Callable[[Trial], bool], where: str) -> bool:
    """Kill once ``trigger`` holds; False when the process exited first (it never got there)."""
    if not wait_for(lambda: trigger(trial), proc):
        if proc.poll() is None:  # alive but never got there in WAIT_BOUND: a hang of its own
            kill(proc)
            raise RuntimeError(f"{where}: the hold point was not reached: {output(proc)[-1500:]}")
        return False
    return trial.kill_now(proc, where)


def locked_store_kill(trial: Trial, after: int) -> bool:
    """Another process holds SQLite's write lock while the run goes on; kill after ``after`` steps
    finished (no patch of unspool: the realistic form of a stalled flush)."""
    proc = trial.start_run(hold="body")
    if not wait_for(lambda: bool(markers(trial.holds, "body")) and run_row(trial.db) is not None, proc):
        return False
    other = sqlite3.connect(trial.db, isolation_level=None, timeout=60)
    try:
        other.execute("BEGIN IMMEDIATE")
        (trial.holds / f"release-{trial.phase}").touch()
        wait_for(lambda: len(Effects(trial.effects).done) >= after, proc)
        return trial.kill_now(proc, f"store_locked:{after}")
    finally:
        other.rollback()
        other.close()


def evaluate(trial: Trial, final: subprocess.Popen[Any] | None, finished: bool, reference_hash: str | None,
             figures: dict[str, Any]) -> dict[str, Any]:
    end = Effects(trial.effects)
    statuses = step_statuses(trial.db)
    row = run_row(trial.db)
    record: dict[str, Any] = {"kills": [k["where"] for k in trial.kills], "hang": not finished}
    # A step re-executed after completion counts once per trial, however many kills it saw.
    reexec: set[str] = set()
    recorded: set[str] = set()
    seen: set[str] = set()
    unfinished: set[str] = set()
    where: dict[str, str] = {}  # the last kill each re-executed step had completed before
    for k in trial.kills:
        at_kill: Effects = k["effects"]
        for invocation in at_kill.done | k["completed"]:
            if end.starts[invocation] > at_kill.starts[invocation]:
                reexec.add(invocation)
                where[invocation] = k["where"].split(":")[0]  # during_flush:4 -> during_flush
                if invocation in k["completed"]:
                    recorded.add(invocation)
                if any(at_kill.starts[c] for c in CONSUMERS.get(invocation, ())):
                    seen.add(invocation)
        for invocation in set(at_kill.starts) - at_kill.done - k["completed"]:
            if end.starts[invocation] > at_kill.starts[invocation]:
                unfinished.add(invocation)
    figures["reexecuted_after_completion"] += len(reexec)
    figures["reexecuted_recorded_completed"] += len(recorded)
    figures["reexecuted_result_seen"] += len(seen)
    figures["reexecuted_unfinished"] += len(unfinished - reexec)
    record["reexecuted_after_completion"] = sorted(reexec)
    record["reexecuted_by_point"] = dict(Counter(where.values()))
    if row is None:  # killed before the run reached the store: nothing to resume
        figures["unresumable"] += 1
        figures["steps_done_unrecorded"] += len(end.done)
        record["unresumable"] = True
        return record
    once_completed = set(end.done).union(*(k["completed"] for k in trial.kills))
    lost = sorted(i for i in once_completed if "completed" not in statuses.get(i, []))
    figures["lost_records"] += len(lost)
    record["lost"] = lost
    record["run_status"] = row[1]
    if not finished:
        figures["hangs"] += 1
    if row[1] in ("running", "initializing"):
        figures["non_terminal"] += 1
    if row[1] != "completed":
        figures["not_completed"] += 1
        record["resume_output"] = output(final)[-600:] if final is not None else ""
    elif reference_hash is not None and total_hash(trial.db) != reference_hash:
        figures["wrong_outputs"] += 1
    staging = list(trial.home.rglob(".staging-*"))
    figures["staging_left"] += len(staging)
    return record


def sweep(base: Path, quick: bool, rng: random.Random, trials_override: int | None,
          kinds: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    figures: dict[str, Any] = Counter()
    details: list[dict[str, Any]] = []

    # Reference: an uninterrupted run (the output hash, and how long a body lasts).
    ref = Trial(base, "reference")
    ref.body_marks = 1  # type: ignore[attr-defined]
    t0 = time.monotonic()
    proc = ref.start_run(mark_body=True)
    wait_for(lambda: bool(markers(ref.holds, "body-started")), proc)
    body_started = time.monotonic()
    if not finish(proc, RESUME_BOUND) or proc.returncode != 0:
        raise RuntimeError(f"the reference run failed: {output(proc)[-2000:]}")
    body_s = time.monotonic() - body_started
    reference_hash = total_hash(ref.db)
    figures_meta = {"reference_run_s": round(time.monotonic() - t0, 2), "reference_body_s": round(body_s, 2)}

    flush_points = [f"during_flush:{n}" for n in (1, 4, 8, 12)]
    points = ["before_steps", "during_step", "between_steps", "after_step_returned", "during_map"]
    per_point = 1 if quick else 8
    plan: list[tuple[str, str]] = []  # (first kill, kill during the resume or "")
    for point in points:
        plan += [(point, "")] * per_point
    plan += [(flush_points[i % len(flush_points)], "") for i in range(per_point)]
    plan += [(f"store_locked:{(2, 6, 10, 14)[i % 4]}", "") for i in range(per_point)]
    resume_kills = ["resume_body", "resume_map", "resume_random"]
    for i in range(1 if quick else 18):
        plan.append((["during_map", "random", "during_step"][i % 3], resume_kills[i % 3]))
    plan += [("completed", "resume_body")] * (0 if quick else 4)
    plan += [("random", "")] * (1 if quick else 30)
    if kinds:
        plan = kinds
    if trials_override is not None:
        rng.shuffle(plan)
        plan = plan[:trials_override]

    for number, (first, during_resume) in enumerate(plan):
        try:
            # A random kill drawn after the run ended is drawn again from a shorter window (the
            # reference body's length varies with the machine's load), at most 3 times.
            window = body_s * 1.1
            for _ in range(3):
                if sweep_trial(base, number, first, during_resume, rng, window, reference_hash, figures, details,
                               quick):
                    break
                window /= 2
        except RuntimeError as exc:  # the harness could not place a kill: reported, never silent
            figures["harness_errors"] += 1
            details.append({"kills": [], "harness_error": str(exc)[:600]})
        if not quick and (number + 1) % 10 == 0:
            print(f"  sweep: {number + 1}/{len(plan)} planned trials, {figures['trials']} resumed, "
                  f"{sum(len(d['kills']) for d in details)} kills", flush=True)
    shutil.rmtree(ref.dir, ignore_errors=True)
    return sweep_result(figures, details, quick, figures_meta)


def sweep_trial(base: Path, number: int, first: str, during_resume: str, rng: random.Random, window: float,
                reference_hash: str | None, figures: Counter[str], details: list[dict[str, Any]],
                quick: bool) -> bool:
    """One trial; False when its first kill came after the process had ended (nothing resumed)."""
    shutil.rmtree(base / f"t{number:03d}", ignore_errors=True)
    trial = Trial(base, f"t{number:03d}")
    trial.body_marks = 1  # type: ignore[attr-defined]
    if first == "completed":  # an uninterrupted run; only its resume is killed
        proc = trial.start_run()
        landed = finish(proc, RESUME_BOUND) and proc.returncode == 0
    elif first.startswith("store_locked"):
        landed = locked_store_kill(trial, int(first.split(":")[1]))
    elif first == "random":
        proc = trial.start_run(mark_body=True)
        landed = random_kill(trial, proc, rng.uniform(0, window), "random")
    else:
        hold, trigger = chosen_point(first)
        proc = trial.start_run(hold=hold)
        landed = held_kill(trial, proc, trigger, first)
    if not landed:
        figures["missed"] += 1
        shutil.rmtree(trial.dir, ignore_errors=True)
        return False
    if during_resume and run_row(trial.db) is not None:
        if during_resume == "resume_random":
            trial.body_marks = len(markers(trial.holds, "body-started")) + 1  # type: ignore[attr-defined]
            proc = trial.start_resume(mark_body=True)
            if not random_kill(trial, proc, rng.uniform(0, window), during_resume):
                figures["missed"] += 1
        else:
            # The resume waits at its body, or at the squares it runs itself from the third
            # one that ever started (every square can be one it re-runs, so no store condition).
            hold = {"resume_body": "body", "resume_map": "map"}[during_resume]
            done_before = len(markers(trial.holds, "body")) + len(list(trial.holds.glob("start-square*")))
            proc = trial.start_resume(hold=hold)

            def reached(t: Trial, n: int = done_before, body: bool = during_resume == "resume_body") -> bool:
                fresh = len(markers(t.holds, "body")) + len(list(t.holds.glob("start-square*"))) > n
                return fresh and (not body or run_row(t.db) is not None)

            if not held_kill(trial, proc, reached, during_resume):
                if (first == "completed" and "already completed" in output(proc)
                        and (run_row(trial.db) or ("", ""))[1] == "completed"):
                    figures["completed_resume_refused"] += 1  # it said so and exited: nothing to kill
                else:
                    figures["missed"] += 1
            elif first == "completed" and (run_row(trial.db) or ("", ""))[1] != "completed":
                figures["completed_run_changed"] += 1  # the killed resume took a completed run back
    final = None
    finished = True
    if run_row(trial.db) is not None:
        final = trial.start_resume()
        finished = finish(final, RESUME_BOUND)
    record = evaluate(trial, final, finished, reference_hash, figures)
    figures["trials"] += 1
    details.append(record)
    shutil.rmtree(trial.dir, ignore_errors=True)
    return True


def sweep_result(figures: Counter[str], details: list[dict[str, Any]], quick: bool,
                 figures_meta: dict[str, Any]) -> dict[str, Any]:
    kills_by_point = Counter(k for d in details for k in d["kills"])
    result = {k: figures.get(k, 0) for k in FIGURES["sweep"]}
    result["kills"] = sum(kills_by_point.values())
    result["steps_done_unrecorded"] = figures.get("steps_done_unrecorded", 0)
    result["kills_by_point"] = dict(sorted(kills_by_point.items()))
    by_point: Counter[str] = Counter()
    for d in details:
        by_point.update(d.get("reexecuted_by_point", {}))
    result["reexecuted_by_point"] = dict(sorted(by_point.items()))  # steps, by the kill they had completed before
    result["trial_details"] = details if quick else []
    result["harness_errors"] = figures.get("harness_errors", 0)
    result["examples"] = [d for d in details if d.get("lost") or d.get("hang") or d.get("run_status") != "completed"][:5]
    result.update(figures_meta)
    return result


# -- two resumes at once ---------------------------------------------------------------------------

def concurrent_resume(base: Path, quick: bool) -> dict[str, Any]:
    """Gated trials (both resumes let past the status check before either executes) decide the
    figures; plain ones (two `unspool runs resume RUN` started at once, nothing else) show how
    often the race is lost without help."""
    result = _concurrent_resumes(base / "gated", 1 if quick else 6, gated=True)
    result["plain"] = _concurrent_resumes(base / "plain", 0 if quick else 3, gated=False)
    return result


def _concurrent_resumes(base: Path, trials: int, gated: bool) -> dict[str, Any]:
    figures: Counter[str] = Counter()
    end_states: Counter[str] = Counter()
    exit_codes: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    for number in range(trials):
        trial = Trial(base, f"c{number:02d}")
        hold, trigger = chosen_point("during_map")
        proc = trial.start_run(hold=hold)
        if not held_kill(trial, proc, trigger, "during_map"):
            raise RuntimeError(f"the run exited before its map: {output(proc)[-1500:]}")
        at_kill = Effects(trial.effects)
        run_id, _ = run_row(trial.db)  # type: ignore[misc]
        phase = trial.phase + 1
        env = trial.env(hold="body")  # both resumes wait at the body until both got there (or one gave up)
        before = len(markers(trial.holds, "body"))
        # `unspool runs resume RUN`, twice, started together. Each process runs the command line's
        # code; between the run's status check and the start of its execution (import_pipeline)
        # it waits until the other one got there too or exited, so both have passed the check
        # before either starts: the interleaving a one-owner claim must settle (issue 13 item 1).
        gone = trial.holds / "gone"
        code = (
            "import glob, os, sys, time\n"
            "from unspool import _cli, _resume\n"
            "original = getattr(_resume, 'import_pipeline', None)\n"
            "def checked(*args, **kwargs):\n"
            f"    open({str(trial.holds)!r} + f'/checked.{{os.getpid()}}', 'w').close()\n"
            "    deadline = time.time() + 60\n"
            f"    while len(glob.glob({str(trial.holds)!r} + '/checked.*')) < 2 and not "
            f"os.path.exists({str(gone)!r}) and time.time() < deadline:\n"
            "        time.sleep(0.005)\n"
            "    return original(*args, **kwargs)\n"
            "if original is not None:\n"
            "    _resume.import_pipeline = checked\n"
            f"sys.argv = ['unspool', 'runs', 'resume', {run_id!r}]; _cli.main()"
        )
        command = [PY, "-c", code] if gated else [UNSPOOL, "runs", "resume", run_id]
        resumes = [start(command, env, trial.dir, f"cli-resume-{i}") for i in (1, 2)]

        def both_there_or_gone(trial: Trial = trial, resumes: list[Any] = resumes, gone: Path = gone,
                               before: int = before) -> bool:
            if any(p.poll() is not None for p in resumes):
                gone.touch()
            arrived = len(markers(trial.holds, "body")) - before
            return arrived + sum(1 for p in resumes if p.poll() is not None) >= 2

        wait_for(both_there_or_gone)
        (trial.holds / f"release-{phase}").touch()
        finished = [finish(p, RESUME_BOUND) for p in resumes]
        figures["hangs"] += finished.count(False)
        end = Effects(trial.effects)
        pids = {str(p.pid) for p in resumes}
        executors: dict[str, set[str]] = {}
        for invocation, starters in end.starters.items():
            after = starters[at_kill.starts[invocation]:]
            executors[invocation] = {pid for pid in after if pid in pids}
        doubled = [i for i, who in executors.items() if len(who) == 2]
        figures["double_executions"] += len(doubled)
        if len({pid for who in executors.values() for pid in who}) == 2:
            figures["both_executed"] += 1
        status = (run_row(trial.db) or ("", "missing"))[1]
        end_states[status] += 1
        step_status = [s for sts in step_statuses(trial.db).values() for s in sts]
        if status == "completed" and "failed" in step_status:
            figures["completed_with_failed_step"] += 1
        figures["step_rows_failed"] += step_status.count("failed")
        exit_codes[",".join(sorted(str(p.returncode) for p in resumes))] += 1
        for p in resumes:
            for line in output(p).splitlines():
                if re.search(r"error|refused|UNIQUE|still running|No such file", line, re.I):
                    line = line.replace(str(base), "<tmp>")
                    messages[re.sub(r"[0-9a-f]{8,}", "…", line.strip())[:300]] += 1
        figures["trials"] += 1
        shutil.rmtree(trial.dir, ignore_errors=True)
    return {**{k: figures.get(k, 0) for k in ("trials", "both_executed", "double_executions",
                                               "completed_with_failed_step", "step_rows_failed", "hangs")},
            "end_states": dict(end_states), "exit_codes": dict(exit_codes),
            "messages": dict(messages.most_common(6))}


# -- concurrent writers ----------------------------------------------------------------------------

def _writers(base: Path, n: int, width: int, chain: int, env_extra: dict[str, str],
             count_rows: Callable[[], tuple[list[tuple[str, int]], int, list[tuple[Any, ...]]]]) -> dict[str, Any]:
    work = base
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "UNSPOOL_HOME": str(work / "home"), "UNSPOOL_PROGRESS": "off", "PYTHONPATH": PYTHONPATH,
           **env_extra}
    t0 = time.monotonic()
    procs = [start([UNSPOOL, "run", f"{BUSY}:busy", "--param", f"tag=w{i}", "--param", f"width={width}",
                    "--param", f"chain={chain}"], env, work, f"writer-{i}") for i in range(n)]
    hangs = sum(1 for p in procs if not finish(p, 600))
    errors = sum(1 for p in procs if p.returncode != 0)
    error_lines = Counter()
    for p in procs:
        for line in output(p).splitlines():
            if re.search(r"error|refused|locked|deadlock|Traceback", line, re.I):
                errors += 1
                error_lines[re.sub(r"[0-9a-f]{8,}", "…", line.strip())[:160]] += 1
    runs, steps, versions = count_rows()
    per_run = 1 + width + 1 + chain
    completed_runs = sum(c for s, c in runs if s == "completed")
    anomalies = [v for v in versions if (v[2], v[3], v[4]) != (1, v[1], v[1])]
    return {"processes": n, "steps_per_run": per_run, "seconds": round(time.monotonic() - t0, 1),
            "runs_completed": completed_runs, "expected_step_rows": n * per_run, "step_rows": steps,
            "lost_rows": n * per_run - steps, "errors": errors, "hangs": hangs,
            "version_anomalies": len(anomalies), "error_lines": dict(error_lines.most_common(5))}


ROWS_SQL = (
    "select status, count(*) from pipeline_runs group by status",
    "select count(*) from step_runs where status = 'completed'",
    "select name, count(*), min(version), max(version), count(distinct version) from artifact_versions group by name",
)


def writers(base: Path, quick: bool) -> dict[str, Any]:
    n, width, chain = (3, 20, 5) if quick else (8, 60, 20)
    result: dict[str, Any] = {}
    db = base / "sqlite" / "home" / "unspool.db"

    def sqlite_rows() -> tuple[Any, int, Any]:
        return db_rows(db, ROWS_SQL[0]), (db_rows(db, ROWS_SQL[1]) or [(0,)])[0][0], db_rows(db, ROWS_SQL[2])

    result["sqlite"] = _writers(base / "sqlite", n, width, chain, {}, sqlite_rows)
    try:
        sys.path.insert(0, str(ROOT / "tests"))
        from _servers import PostgresServer, find_pg_bindir

        bindir = find_pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        server = PostgresServer(bindir)
        _cleanups.append(server.stop)
        server.start()
        database = server.create_database()
    except BaseException as exc:  # noqa: BLE001 - pytest.skip raises a BaseException
        if isinstance(exc, KeyboardInterrupt):
            raise
        result["postgresql"] = {"unavailable": str(exc)}
        return result
    import psycopg

    def pg_rows() -> tuple[Any, int, Any]:
        with psycopg.connect(host="127.0.0.1", port=server.port, user="unspool", password="unspool-test-pw",
                             dbname=database) as conn:
            return (conn.execute(ROWS_SQL[0]).fetchall(), conn.execute(ROWS_SQL[1]).fetchone()[0],
                    conn.execute(ROWS_SQL[2]).fetchall())

    try:
        result["postgresql"] = _writers(base / "postgresql", n, width, chain,
                                        {"UNSPOOL_STORE_URL": server.url(database)}, pg_rows)
    finally:
        server.stop()
        _cleanups.remove(server.stop)
    return result


# -- full disk -------------------------------------------------------------------------------------

def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mount -t tmpfs failed: {done.stderr.strip()} (the full-disk scenario needs root)")
    _mounts.append(path)


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)
    if path in _mounts:
        _mounts.remove(path)


def fill(folder: Path, leave: int) -> None:
    """Fill the filesystem holding ``folder`` until ``leave`` bytes are free."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    size = filler.stat().st_size
    os.truncate(filler, max(0, size + free - leave))


def _full_disk_trial(base: Path, name: str, where: str, leave: int, steps: int, print_bytes: int,
                     bound: float) -> dict[str, Any]:
    work = base / name
    work.mkdir(parents=True)
    mount = work / "mnt"
    mount_tmpfs(mount, "2m")
    try:
        env = {**os.environ, "UNSPOOL_HOME": str(work / "home"), "PYTHONPATH": PYTHONPATH,
               "PRINT_BYTES": str(print_bytes)}
        env.pop("UNSPOOL_PROGRESS", None)
        env.pop("UNSPOOL_STORE_URL", None)
        env.pop("UNSPOOL_ARTIFACT_STORE", None)
        db = work / "home" / "unspool.db"
        if where == "metadata":
            db = mount / "unspool.db"
            env["UNSPOOL_STORE_URL"] = f"sqlite:///{db}"
            # the schema first, then the disk fills up
            init = start([PY, "-c", "from unspool import Client; Client().list_pipeline_runs()"], env, work, "init")
            if not finish(init, RESUME_BOUND) or init.returncode != 0:
                raise RuntimeError(f"could not create the store: {output(init)[-800:]}")
        else:
            env["UNSPOOL_ARTIFACT_STORE"] = str(mount / "artifacts")
        fill(mount, leave)
        proc = start([UNSPOOL, "run", f"{BUSY}:busy", "--param", f"width={steps}", "--param", "chain=0"],
                     env, work, "run")
        finished = finish(proc, bound)
        text = output(proc)
        (mount / "filler").unlink()  # so that SQLite can open (and recover) what is there
        rows = db_rows(db, "select status, count(*) from pipeline_runs group by status")
        status = rows[0][0] if rows else "missing"
        stored = (db_rows(db, "select count(*) from step_runs where status = 'completed'") or [(0,)])[0][0]
        expected = steps + 2
        printed = bool(re.search(r"finished in .*\(\d+ completed\)", text))  # "... (402 completed)"
        reported = proc.returncode == 0 or printed
        missing_files = 0
        if where == "artifacts" and (mount / "artifacts").exists():
            for (uri,) in db_rows(db, "select uri from artifact_versions"):
                if not os.path.exists(uri):
                    missing_files += 1
        summary = [line for line in text.splitlines() if "finished in" in line or "error" in line.lower() or "refused" in line]
        # What any reader is shown once the disk has room again: `runs list` reaps a run whose
        # orchestrator is gone (a store that refused every write could not take its last status).
        seen = status
        if finished and status in ("running", "initializing"):
            lister = start([UNSPOOL, "runs", "list"], env, work, "list")
            finish(lister, RESUME_BOUND)
            rows = db_rows(db, "select status from pipeline_runs")
            seen = rows[0][0] if rows else "missing"
        return {
            "store_on_tmpfs": where, "free_bytes": leave, "steps": expected, "exit_code": proc.returncode,
            "hang": not finished, "printed_completed": printed, "reported_success": reported, "run_status": status, "completed_step_rows": stored,
            "artifact_files_missing": missing_files,
            "success_not_stored": reported and (status != "completed" or stored < expected or missing_files > 0),
            "non_terminal": finished and status in ("running", "initializing"),
            "status_after_reap": seen,
            "non_terminal_after_reap": finished and seen in ("running", "initializing"),
            "console": [re.sub(r"[0-9a-f]{32}", "…", s)[:200] for s in summary[-3:]],
        }
    finally:
        unmount(mount)


def full_disk(base: Path, quick: bool) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {"unavailable": "needs root to mount a tmpfs"}
    probe = base / "probe"
    try:
        mount_tmpfs(probe, "64k")  # root in a container may still be refused a mount
    except RuntimeError as exc:
        return {"unavailable": str(exc)}
    unmount(probe)
    # (store on the tmpfs, bytes left free, steps, bytes each step prints): with nothing free the
    # run fails at its start; with a little free it starts and the disk fills up during the run.
    cases = [("metadata", 65_536, 400, 0), ("artifacts", 65_536, 100, 2000)]
    if not quick:
        cases += [("metadata", 0, 400, 0), ("metadata", 262_144, 400, 0),
                  ("artifacts", 0, 100, 2000), ("artifacts", 262_144, 100, 2000)]
    bound = 15.0 if quick else 60.0  # an uninterrupted run of this size takes about a second
    trials = [_full_disk_trial(base, f"d{i}", *case, bound) for i, case in enumerate(cases)]
    figures: dict[str, Any] = {}
    for where in ("metadata", "artifacts"):
        mine = [t for t in trials if t["store_on_tmpfs"] == where]
        figures[where] = {
            "trials": len(mine),
            "success_not_stored": sum(t["success_not_stored"] for t in mine),
            "hangs": sum(t["hang"] for t in mine),
            "non_terminal": sum(t["non_terminal"] for t in mine),
            "non_terminal_after_reap": sum(t["non_terminal_after_reap"] for t in mine),
            "runs": mine,
        }
    return figures


# -- main ------------------------------------------------------------------------------------------

def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def summary_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    s = results["scenarios"].get("sweep")
    if s and "error" not in s:
        lines.append(
            f"sweep: {s['kills']} kills in {s['trials']} trials; re-executed after completion "
            f"{s['reexecuted_after_completion']} (result seen {s['reexecuted_result_seen']}, recorded completed "
            f"{s['reexecuted_recorded_completed']}); lost records {s['lost_records']}; hangs {s['hangs']}; "
            f"non-terminal {s['non_terminal']}; not completed {s['not_completed']}; wrong outputs {s['wrong_outputs']}; "
            f"completed runs changed by a killed resume {s['completed_run_changed']} "
            f"({s['completed_resume_refused']} resumes of one refused); harness errors {s['harness_errors']}")
    c = results["scenarios"].get("concurrent_resume")
    if c and "error" not in c:
        lines.append(
            f"concurrent resume: {c['trials']} trials; both executed {c['both_executed']}; double executions "
            f"{c['double_executions']}; completed with a failed step {c['completed_with_failed_step']}; "
            f"end states {c['end_states']}; exit codes {c['exit_codes']}")
        plain = c.get("plain") or {}
        if plain.get("trials"):
            lines.append(f"concurrent resume, plain: {plain['trials']} trials; both executed {plain['both_executed']}; "
                         f"double executions {plain['double_executions']}; end states {plain['end_states']}")
    w = results["scenarios"].get("writers")
    if w and "error" not in w:
        for store, r in w.items():
            if not isinstance(r, dict):
                continue
            if "unavailable" in r:
                lines.append(f"writers/{store}: unavailable ({r['unavailable']})")
            else:
                lines.append(f"writers/{store}: {r['processes']} processes, {r['step_rows']}/{r['expected_step_rows']}"
                             f" step rows, lost {r['lost_rows']}, errors {r['errors']}, hangs {r['hangs']}, "
                             f"version anomalies {r['version_anomalies']} ({r['seconds']} s)")
    d = results["scenarios"].get("full_disk")
    if d and "error" not in d:
        if "unavailable" in d:
            lines.append(f"full disk: unavailable ({d['unavailable']})")
        else:
            for where, r in d.items():
                if not isinstance(r, dict):
                    continue
                lines.append(f"full disk/{where}: {r['trials']} runs; success reported but not stored "
                             f"{r['success_not_stored']}; hangs {r['hangs']}; non-terminal {r['non_terminal']}"
                             f" ({r['non_terminal_after_reap']} once reaped)")
    for name, r in results["scenarios"].items():
        if "error" in r:
            lines.append(f"{name}: ERROR {r['error']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run (about a minute)")
    parser.add_argument("--only", default="", help="comma-separated scenarios: sweep,concurrent_resume,writers,full_disk")
    parser.add_argument("--trials", type=int, default=None, help="sweep trials (a random subset of the plan)")
    parser.add_argument("--kinds", default="", help=(
        "sweep trials to run instead of the plan, comma-separated FIRST[/RESUME]: FIRST one of before_steps, "
        "during_step, between_steps, after_step_returned, during_map, during_flush:N, store_locked:N, random, "
        "completed; RESUME one of resume_body, resume_map, resume_random (e.g. completed/resume_body)"))
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or ["sweep", "concurrent_resume", "writers", "full_disk"]
    rng = random.Random(args.seed)

    def on_signal(signum: int, _frame: Any) -> None:
        cleanup()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    base = Path(tempfile.mkdtemp(prefix="unspool-torture-"))
    started = time.time()
    results: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "mode": "quick" if args.quick else "full", "seed": args.seed,
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(), "git_commit": git_commit(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "figures": FIGURES, "scenarios": {},
    }
    try:
        for name in names:
            t0 = time.monotonic()
            print(f"torture: {name} ...", flush=True)
            try:
                if name == "sweep":
                    kinds = [tuple((k.split("/") + [""])[:2]) for k in args.kinds.split(",") if k]
                    result = sweep(base / name, args.quick, rng, args.trials, kinds)  # type: ignore[arg-type]
                elif name == "concurrent_resume":
                    result = concurrent_resume(base / name, args.quick)
                elif name == "writers":
                    result = writers(base / name, args.quick)
                elif name == "full_disk":
                    result = full_disk(base / name, args.quick)
                else:
                    raise ValueError(f"unknown scenario {name!r}")
            except Exception as exc:  # noqa: BLE001 - one broken scenario does not hide the others
                result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            finally:
                cleanup()
            result["seconds"] = round(time.monotonic() - t0, 1)
            results["scenarios"][name] = result
    finally:
        cleanup()
        shutil.rmtree(base, ignore_errors=True)
    results["elapsed_s"] = round(time.time() - started, 1)
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\n".join(summary_lines(results)))
    print(f"torture: {results['elapsed_s']} s; figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
