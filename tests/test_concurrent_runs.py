"""Several orchestrating processes on one embedded SQLite store at once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    '''
    import sys
    from unspool import pipeline, step

    @step
    def make(n: int) -> list[int]:
        return list(range(n))

    @step
    def bump(x: int, tag: str) -> int:
        return x + 1

    @step
    def total(xs: list[int]) -> int:
        return sum(xs)

    @pipeline(dynamic=True)
    def busy(tag: str):
        values = bump.map(make(60), tag=tag)
        chain = total(values)
        for _ in range(20):
            chain = bump(chain, tag=tag)

    if __name__ == "__main__":
        busy(sys.argv[1])
    '''
)


def test_parallel_processes_never_hit_database_is_locked_and_lose_nothing(tmp_path: Path, home: Path) -> None:
    script = tmp_path / "busy.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "UNSPOOL_PROGRESS": "off"}
    procs = [
        subprocess.Popen([sys.executable, str(script), f"p{i}"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "database is locked" not in err
    with sqlite3.connect(home / "unspool.db") as conn:
        runs = conn.execute("select status, count(*) from pipeline_runs group by status").fetchall()
        steps = conn.execute("select count(*) from step_runs where status in ('completed', 'cached')").fetchone()[0]
        versions = conn.execute(
            "select name, count(*), min(version), max(version), count(distinct version) "
            "from artifact_versions group by name"
        ).fetchall()
        links = conn.execute("select count(*) from step_run_artifacts").fetchone()[0]
    assert runs == [("completed", 4)]
    assert steps == 4 * (1 + 60 + 1 + 20)
    for name, count, low, high, distinct in versions:
        assert (low, high, distinct) == (1, count, count), name  # 1..N, no gaps, no duplicates
    assert links > 0
