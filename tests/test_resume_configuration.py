"""A run configured with ``with_options(...)`` and killed resumes with exactly that configuration.

The pipeline's module defines it plainly; the options are applied only where it is called
(``__main__``), so the resumed process, which loads the module again, can only get them from
what the run recorded. Every wait is on an effect (a row in the store, a file a step
writes), never on a sleep.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PIPELINE = textwrap.dedent(
    '''
    import os, time
    from pathlib import Path
    from unspool import get_step_context, pipeline, step

    EFFECTS = Path(os.environ["EFFECTS_DIR"])

    @step
    def work(i: int) -> int:
        me = get_step_context().invocation_id
        (EFFECTS / f"{me}.started").touch()
        running = [p for p in EFFECTS.glob("*.started") if not p.with_suffix(".done").exists()]
        (EFFECTS / f"{me}.concurrency").write_text(str(len(running)))
        while os.environ.get("HOLD") and not (EFFECTS / f"{me}.release").exists():
            time.sleep(0.01)  # the test decides when the step ends
        (EFFECTS / f"{me}.done").touch()
        return i

    @step
    def flaky(values: list[int]) -> int:
        if os.environ.get("FLAKY") and get_step_context().attempt == 1:
            raise RuntimeError("first attempt fails")
        return sum(values)

    @pipeline
    def configured():
        flaky([work(i) for i in range(4)])

    OPTIONS = dict(
        max_parallelism=1,
        enable_cache=False,
        retry={"max_retries": 2, "delay": 0.0},
        steps={"flaky": {"retry": {"max_retries": 1}, "settings": {"marker": "step-override"}}},
        settings={"team": "ml"},
    )

    if __name__ == "__main__":
        configured.with_options(**OPTIONS)()
    '''
)


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "unspool.db", timeout=30)


def _rows(home: Path, sql: str) -> list[tuple]:
    if not (home / "unspool.db").exists():
        return []
    try:
        with _db(home) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def _env(home: Path, effects: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "UNSPOOL_HOME": str(home), "EFFECTS_DIR": str(effects), "UNSPOOL_PROGRESS": "off", **extra}


def test_with_options_survive_a_sigkill_and_resume(tmp_path: Path) -> None:
    home, effects = tmp_path / "home", tmp_path / "effects"
    effects.mkdir()
    script = tmp_path / "configured_pipeline.py"
    script.write_text(PIPELINE)
    # A plain run first: every step's outputs are in the cache, so a resume that lost
    # enable_cache=False would show them as cached.
    warm = subprocess.run([sys.executable, "-c", "import configured_pipeline as m; m.configured()"],
                          cwd=tmp_path, env=_env(home, effects), capture_output=True, text=True, timeout=120)
    assert warm.returncode == 0, warm.stderr
    for marker in effects.iterdir():
        marker.unlink()

    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=_env(home, effects, HOLD="1", FLAKY="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        (effects / "work.release").touch()
        _wait_for(lambda: proc.poll() is not None or (
            (effects / "work_2.started").exists()
            and ("work",) in _rows(home, "select s.invocation_id from step_runs s join pipeline_runs r on r.id = s.run_id "
                                         "where r.status != 'completed' and s.status = 'completed'")
        ))
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        # max_parallelism=1 in the first execution: work_2 holds the only slot
        assert not (effects / "work_3.started").exists()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    ((run_id,),) = _rows(home, "select id from pipeline_runs where status != 'completed'")

    for marker in effects.iterdir():
        marker.unlink()
    code = f"from unspool import Client; r = Client().resume_pipeline_run({run_id!r}); print(r.status.value)"
    resumed = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=_env(home, effects, HOLD="1", FLAKY="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(effects.glob("*.started")) or resumed.poll() is not None)
        for name in ("work_2", "work_3", "work_4"):  # with 16 slots all three would be running now
            (effects / f"{name}.release").touch()
        out, err = resumed.communicate(timeout=120)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert resumed.returncode == 0, err
    assert out.strip().endswith("completed")
    concurrency = {p.stem: p.read_text() for p in effects.glob("*.concurrency")}
    assert concurrency == {"work_2": "1", "work_3": "1", "work_4": "1"}  # max_parallelism=1 again

    from unspool import Client

    os.environ["UNSPOOL_HOME"] = str(home)
    run = Client().get_pipeline_run(run_id)
    assert run.status.value == "completed"
    # The recorded configuration is the one the first execution had ...
    assert run.config["max_parallelism"] == 1
    assert run.config["enable_cache"] is False
    assert run.config["retry"] == {"max_retries": 2, "delay": 0.0, "backoff": 1.0}
    assert run.config["settings"] == {"team": "ml"}
    assert run.config["steps"]["flaky"]["retry"] == {"max_retries": 1}
    # ... and it is what the resumed steps ran with:
    steps = run.steps
    assert {s.status.value for s in steps.values()} == {"completed"}  # enable_cache=False: nothing cached
    flaky = steps["flaky"]
    assert flaky.config["retry"]["max_retries"] == 1  # the step override, not the pipeline's 2
    assert flaky.config["settings"] == {"marker": "step-override"}
    assert [a["status"] for a in flaky.attempts] == ["failed", "completed"]
