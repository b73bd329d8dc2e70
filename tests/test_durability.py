"""Durable completion and a store that refuses writes (trust issue, items 2 and 3).

* A step whose result anything has seen (the body, or a downstream step) is never executed
  again, even when the orchestrator is killed right after: its completion is committed
  before the result is handed over. The scripts below slow the background writer to one
  flush an hour, so nothing but that commit can have stored the completion.
* A metadata store that refuses writes for good (here a real SQLite file that cannot grow:
  the process runs with a file-size limit, so SQLite's writes fail with EFBIG exactly as on
  a full disk) fails the run promptly with one line naming the store and the cause, and the
  console never reports a success the store does not hold.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PIPELINES = textwrap.dedent(
    '''
    import os, time
    import unspool._metadata_store as store_module
    from unspool import pipeline, step

    store_module.FLUSH_INTERVAL = 3600.0  # only the commits a result needs reach the store
    EFFECTS = os.environ["EFFECTS_FILE"]
    SEEN = os.environ.get("SEEN_FILE", "")
    RELEASE = os.environ.get("RELEASE_FILE", "")

    def effect(name: str) -> None:
        with open(EFFECTS, "a") as f:
            f.write(name + "\\n")

    def seen_then_hold() -> None:
        # The result is visible here: say so, then wait to be killed (or released on resume).
        if not os.path.exists(RELEASE):
            open(SEEN, "w").close()
            while not os.path.exists(RELEASE):
                time.sleep(0.01)

    @step(enable_cache=False)
    def first() -> int:
        effect("first")
        return 41

    @step(enable_cache=False)
    def consumer(x: int) -> int:
        effect("consumer")
        seen_then_hold()
        return x + 1

    @pipeline(dynamic=True, enable_cache=False)
    def body_sees() -> int:
        value = first()
        seen_then_hold()
        return consumer(value)

    @pipeline(enable_cache=False)
    def downstream_sees() -> None:
        consumer(first())
    '''
)

CHAIN = textwrap.dedent(
    '''
    import os, resource, signal
    from unspool import pipeline, step

    EFFECTS = os.environ["EFFECTS_FILE"]

    @step(enable_cache=False)
    def inc(x: int) -> int:
        with open(EFFECTS, "a") as f:
            f.write(f"{x}\\n")
        return x + 1

    @pipeline(dynamic=True, enable_cache=False)
    def chain(k: int) -> int:
        x = 0
        for _ in range(k):
            x = inc(x)
        return x

    if os.environ.get("FILE_SIZE_LIMIT"):  # from here on no file may grow past the limit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails (EFBIG) instead of killing
        limit = int(os.environ["FILE_SIZE_LIMIT"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    '''
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "UNSPOOL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(tmp_path),
           "EFFECTS_FILE": str(tmp_path / "effects.txt"), "UNSPOOL_PROGRESS": "plain", **extra}
    env.pop("UNSPOOL_STORE_URL", None)
    env.pop("UNSPOOL_ARTIFACT_STORE", None)
    return env


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the pipeline exited ({proc.returncode}) before {path.name}:\n{out}\n{err}")
        try:
            proc.wait(0.01)
        except subprocess.TimeoutExpired:
            pass


def _unspool(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unspool", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _runs(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "home" / "unspool.db") as db:
        return db.execute("select id, status from pipeline_runs").fetchall()


@pytest.mark.parametrize("pipeline_name", ["body_sees", "downstream_sees"])
def test_a_result_that_was_seen_is_never_executed_again(tmp_path: Path, pipeline_name: str) -> None:
    (tmp_path / "durable_pipelines.py").write_text(PIPELINES)
    seen, release = tmp_path / "seen", tmp_path / "release"
    env = _env(tmp_path, SEEN_FILE=str(seen), RELEASE_FILE=str(release))
    proc = subprocess.Popen([sys.executable, "-m", "unspool", "run", f"durable_pipelines.py:{pipeline_name}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(seen, proc)  # `first`'s result is in the body's (or `consumer`'s) hands
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [(run_id, _)] = _runs(tmp_path)
    release.touch()
    done = _unspool(env, "runs", "resume", run_id)
    assert done.returncode == 0, done.stderr
    effects = (tmp_path / "effects.txt").read_text().split()
    assert effects.count("first") == 1, f"`first` ran again after its result was seen: {effects}"
    assert _runs(tmp_path) == [(run_id, "completed")]


def test_a_store_that_refuses_writes_fails_the_run_promptly_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "full_chain.py").write_text(CHAIN)
    env = _env(tmp_path, FILE_SIZE_LIMIT=str(300_000))
    done = subprocess.run([sys.executable, "-m", "unspool", "run", "full_chain.py:chain", "--param", "k=400"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    refused = [line for line in done.stderr.splitlines() if "refused a write" in line]
    assert len(refused) == 1, done.stderr  # one line, not the summary and an error repeating it
    assert "metadata store at sqlite:///" in refused[0] and "unspool.db" in refused[0]
    assert "finished in" not in done.stderr, "the console reported a run the store does not hold"
    ran = len((tmp_path / "effects.txt").read_text().split())
    assert ran < 400, f"the run went on after its store refused writes ({ran} of 400 steps ran)"

    # What was committed is intact and the run can be taken up again once the store accepts writes.
    [(run_id, status)] = _runs(tmp_path)
    assert status != "completed"
    env.pop("FILE_SIZE_LIMIT")
    resumed = _unspool(env, "runs", "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert _runs(tmp_path) == [(run_id, "completed")]
    effects = [int(x) for x in (tmp_path / "effects.txt").read_text().split()]
    # every step ran; only the one whose completion the store refused (the body never saw it) ran twice
    assert sorted(set(effects)) == list(range(400))
    assert len(effects) - 400 <= 1, effects


def test_a_lost_database_server_fails_the_run_after_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL goes away mid-run: the writes are retried for the retry window, then the run
    stops with the store's error (its password masked), instead of running on unrecorded."""
    from _servers import PG_PASSWORD, PostgresServer, find_pg_bindir, unavailable
    from unspool import StoreError, pipeline, step
    from unspool import _metadata_store as store_module
    from unspool.testing import reset_stores

    bindir = find_pg_bindir()
    if bindir is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(bindir)  # its own server: this test stops it
    server.start()
    try:
        monkeypatch.setenv("UNSPOOL_STORE_URL", server.url(server.create_database()))
        monkeypatch.setattr(store_module, "RETRY_WINDOW", 2.0)
        ran: list[int] = []

        @step(enable_cache=False)
        def work(i: int) -> int:
            ran.append(i)
            if i == 2:
                server.stop()
            return i

        @pipeline(dynamic=True, enable_cache=False)
        def twenty() -> None:
            for i in range(20):
                work(i)

        with pytest.raises(StoreError) as raised:
            twenty()
        message = str(raised.value)
        assert "refused a write" in message and "postgresql" in message
        assert PG_PASSWORD not in message
        assert ran == [0, 1, 2], "steps went on after the store was lost"
    finally:
        reset_stores()
        server.stop()
