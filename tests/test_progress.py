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


def test_a_pipe_gets_one_plain_line_per_finished_step(tmp_path: Path, home: Path) -> None:
    flow = _write_flow(tmp_path)
    env = {**os.environ, "UNSPOOL_PROGRESS": "auto"}
    result = subprocess.run([sys.executable, "-m", "unspool", "run", f"{flow}:flow"], env=env,
                            capture_output=True, text=True, timeout=120)
    lines = result.stderr.splitlines()
    assert sorted(line for line in lines if line.startswith("unspool: step")) == [
        "unspool: step work completed",
        "unspool: step work_2 completed",
        "unspool: step work_3 failed: two is bad",
        "unspool: step work_4 completed",
    ]
    assert "[work_3] working on 2" in result.stdout
    assert "\x1b[" not in result.stderr
