"""What a run shows on the console: a live view in a terminal, plain lines elsewhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from _servers import unavailable

FLOW = '''
from unspool import pipeline, step

@step(enable_cache=False)
def work(i: int) -> int:
    print(f"working on {i}")
    if i == 2:
        raise ValueError("two is bad")
    return i

@pipeline(dynamic=True)
def flow():
    work.map([0, 1, 2, 3])
'''

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _write_flow(tmp_path: Path) -> Path:
    path = tmp_path / "flow.py"
    path.write_text(FLOW)
    return path


def test_terminal_gets_a_live_view_with_step_output_above_it(tmp_path: Path, home: Path) -> None:
    if shutil.which("script") is None:
        unavailable("needs util-linux `script` for a pseudo-terminal")
    flow = _write_flow(tmp_path)
    env = {**os.environ, "UNSPOOL_PROGRESS": "auto", "COLUMNS": "120", "TERM": "xterm-256color"}
    command = f"{sys.executable} -m unspool run {flow}:flow"
    result = subprocess.run(["script", "-qec", command, "/dev/null"], env=env, capture_output=True,
                            text=True, timeout=120)
    screen = ANSI.sub("", result.stdout)
    assert result.returncode == 1, screen  # the run failed: step work_3 raised
    for i in range(4):
        assert f"working on {i}" in screen
    assert "4/4 finished, 0 running, 1 failed" in screen  # the live view's last frame
    assert "✗ work_3: two is bad" in screen
    assert "unspool: step work" not in screen  # no plain lines in a terminal


def test_a_pipe_gets_failures_and_a_line_per_finished_map(tmp_path: Path, home: Path) -> None:
    flow = _write_flow(tmp_path)
    env = {**os.environ, "UNSPOOL_PROGRESS": "auto"}
    result = subprocess.run([sys.executable, "-m", "unspool", "run", f"{flow}:flow"], env=env,
                            capture_output=True, text=True, timeout=120)
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("unspool: step")] == ["unspool: step work_3 failed: two is bad"]
    assert "unspool: map work: 4 steps finished (3 completed, 1 failed)" in lines
    assert "[work_3] working on 2" in result.stdout
    assert "\x1b[" not in result.stderr


BIG_FLOW = '''
from unspool import pipeline, step

@step(enable_cache=False)
def work(i: int) -> int:
    if i % 100 == 7:
        raise ValueError(f"{i} is bad")
    return i

@pipeline(dynamic=True)
def big():
    work.map(range(300))
'''


def test_a_big_map_outside_a_terminal_prints_failures_and_a_summary_not_a_line_per_step(
    tmp_path: Path, home: Path
) -> None:
    flow = tmp_path / "big.py"
    flow.write_text(BIG_FLOW)
    env = {**os.environ, "UNSPOOL_PROGRESS": "auto"}
    result = subprocess.run([sys.executable, "-m", "unspool", "run", f"{flow}:big"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # three steps failed and nobody handled them
    lines = result.stderr.splitlines()
    assert not [line for line in lines if line.endswith(" completed")]
    assert sorted(line for line in lines if line.startswith("unspool: step")) == [
        "unspool: step work_108 failed: 107 is bad",
        "unspool: step work_208 failed: 207 is bad",
        "unspool: step work_8 failed: 7 is bad",
    ]
    assert "unspool: map work: 300 steps finished (297 completed, 3 failed)" in lines
    progress = [line for line in lines if line.startswith("unspool: progress")]
    assert all(re.fullmatch(r"unspool: progress: \d+/\d+ steps finished \(.*\), \d+ running", p) for p in progress)
    assert len(lines) < 20 + len(progress)

    verbose = subprocess.run([sys.executable, "-m", "unspool", "run", "--verbose", f"{flow}:big"], env=env,
                             capture_output=True, text=True, timeout=300)
    per_step = [line for line in verbose.stderr.splitlines() if line.startswith("unspool: step")]
    assert len(per_step) == 300


def test_the_periodic_progress_line_counts_by_status_and_only_when_something_finished() -> None:
    import io
    from types import SimpleNamespace

    from unspool._events import Event
    from unspool._progress import _PlainView
    from unspool._types import ExecutionStatus as S

    out = io.StringIO()
    view = _PlainView(SimpleNamespace(id="r"), out, per_step=False)  # type: ignore[arg-type]
    for inv, status in [("a", S.RUNNING), ("b", S.RUNNING), ("c", S.RUNNING), ("a", S.COMPLETED), ("b", S.FAILED)]:
        view.on_event(Event("step", "r", status, invocation_id=inv, detail="bad" if status == S.FAILED else None))
    view.on_event(Event("step", "other-run", S.COMPLETED, invocation_id="x"))
    assert view.progress_line() == "unspool: progress: 2/3 steps finished (1 completed, 1 failed), 1 running\n"
    assert view.progress_line() is None  # nothing finished since
    assert out.getvalue() == "unspool: step b failed: bad\n"
