"""Isolated steps: ``runtime="isolated"`` runs every attempt in a fresh worker process.

What is guaranteed: the step runs in another process than the orchestrator; functions of
``__main__``, closures and lambdas travel with it; a worker that dies (exit, SIGKILL,
segfault) fails its step with a message saying how, never hangs the run, and keeps what it
printed; retries, caching and fan-out behave as for inline steps; only the orchestrator
writes the metadata store; FAIL_FAST kills running workers; resources bound concurrency.
Workers are forked from a zygote by default; ``spawn`` (one interpreter per attempt) is the
fallback and is exercised too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from unspool import (
    Client,
    ExecutionMode,
    RunFailedError,
    StepFailedError,
    StepRetryConfig,
    get_step_context,
    log_metadata,
    pipeline,
    step,
    unmapped,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["zygote", "spawn"])
def start_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("UNSPOOL_ISOLATED_START", request.param)
    return request.param


@step(runtime="isolated", enable_cache=False)
def whoami() -> int:
    return os.getpid()


@step(runtime="isolated", enable_cache=False)
def die(how: str) -> int:
    print("last words", flush=True)
    if how == "exit":
        os._exit(3)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        import ctypes

        ctypes.string_at(0)
    return 0


def _last_run():
    return Client().list_pipeline_runs()[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _poll(condition, what: str, timeout: float = 120.0) -> None:
    """Wait for an effect; the bound only turns a hang into a failure, it never decides a result."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout:.0f} s"
        time.sleep(0.02)


def _read_pid(path: Path) -> int:
    """The pid a step wrote, once the whole number is there (the file exists before it is written)."""
    _poll(lambda: path.exists() and path.read_text().strip().isdigit(), f"a pid in {path.name}")
    return int(path.read_text())


def _wait_dead(pid: int) -> None:
    _poll(lambda: not _alive(pid), f"process {pid} to exit")


def test_each_isolated_step_runs_in_a_fresh_process_of_its_own(start_method: str) -> None:
    @pipeline(dynamic=True)
    def p() -> list[int]:
        return [whoami.submit().load() for _ in range(3)]

    run = p()
    pids = [s.output.load() for s in run.steps.values()]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    assert all(s.runtime == "isolated" for s in run.steps.values())


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads a process's children in /proc")
def test_spare_workers_wait_forked_ahead_run_one_attempt_each_and_end_with_the_run() -> None:
    @step(runtime="isolated", enable_cache=False)
    def spares() -> dict:
        me, zygote = os.getpid(), os.getppid()

        def siblings() -> list[int]:
            with open(f"/proc/{zygote}/task/{zygote}/children") as f:
                return [int(pid) for pid in f.read().split() if int(pid) != me]

        while not siblings():  # the zygote forks a replacement once it handed this one over
            time.sleep(0.01)
        return {"pid": me, "siblings": siblings()}

    @pipeline(dynamic=True)
    def p() -> list[dict]:
        return [spares.submit().load() for _ in range(3)]

    seen = [s.output.load() for s in p().steps.values()]
    pids = [s["pid"] for s in seen]
    assert len(set(pids)) == 3  # a fresh process per attempt, even though forked ahead
    assert pids[1] in seen[0]["siblings"]  # the second step's worker waited while the first ran
    # a spare seen waiting while an earlier step ran is the worker of a later step, or ended
    # with the run unused; none lives on
    for s in seen:
        for pid in s["siblings"]:
            _wait_dead(pid)


def test_closures_lambdas_and_hooks_travel_by_value() -> None:
    offset = 10
    scale = lambda v: v * 3  # noqa: E731
    seen: list[str] = []

    @step(runtime="isolated", on_success=lambda: print("hook ran in", os.getpid()))
    def transform(x: int) -> int:
        log_metadata({"worker_pid": os.getpid()})
        return scale(x) + offset

    @pipeline(dynamic=True)
    def p() -> None:
        seen.append(str(transform(1).load()))

    run = p()
    assert seen == ["13"]
    step_run = run.steps["transform"]
    assert step_run.metadata["worker_pid"] != os.getpid()
    assert f"hook ran in {step_run.metadata['worker_pid']}" in step_run.logs


def test_a_script_step_in_main_runs_without_reimporting_the_script(tmp_path: Path) -> None:
    # No `if __name__ == "__main__"` guard: a worker that re-imported the script would run
    # the pipeline again (and again). Workers load the step by value instead.
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(
        """
        import os
        from unspool import pipeline, step

        MARK = os.environ["MARK_FILE"]
        with open(MARK, "a") as f:
            f.write("imported\\n")

        def helper(x):
            return x * 2

        @step(runtime="isolated")
        def double(x: int) -> int:
            return helper(x)

        @pipeline(dynamic=True)
        def scripted():
            print("RESULT", double(21).load())

        scripted()
        """
    ))
    mark = tmp_path / "mark"
    env = {**os.environ, "MARK_FILE": str(mark), "UNSPOOL_PROGRESS": "off"}
    proc = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT 42" in proc.stdout
    assert mark.read_text() == "imported\n"


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("exit", "worker process exited with exit code 3 while running step 'die'"),
        ("sigkill", "worker process exited with signal 9 (SIGKILL"),
        ("segfault", "worker process exited with signal 11 (SIGSEGV"),
    ],
)
def test_a_dying_worker_fails_its_step_clearly_and_keeps_its_log(start_method: str, how: str, expected: str) -> None:
    @pipeline(dynamic=True)
    def p() -> None:
        die(how)

    with pytest.raises(StepFailedError):  # promptly: the suite's timeout catches a hang
        p()
    step_run = _last_run().steps["die"]
    assert step_run.status.value == "failed"
    assert expected in step_run.error["message"]
    assert step_run.error["type"] == "WorkerLostError"
    logs = step_run.logs
    assert logs.startswith("last words\n")
    assert expected in logs  # the death is noted in the log too
    if how == "segfault":
        assert "Segmentation fault" in logs  # faulthandler wrote the worker's stack there


def test_output_reaches_the_log_file_while_the_step_still_runs(tmp_path: Path, home: Path) -> None:
    release = tmp_path / "release"

    @step(runtime="isolated", enable_cache=False)
    def streamer() -> None:
        print("halfway", flush=True)
        while not release.exists():  # released by the body once it saw "halfway" in the log
            time.sleep(0.02)
        print("done")

    seen: list[str] = []

    @pipeline(dynamic=True)
    def p() -> None:
        future = streamer.submit()
        try:
            _poll(lambda: any("halfway" in f.read_text() for f in home.glob("artifacts/*/streamer.log")),
                  "'halfway' in the running step's log file")
            seen.extend(f.read_text() for f in home.glob("artifacts/*/streamer.log"))
        finally:
            release.write_text("go")
        future.result()

    run = p()
    assert seen == ["halfway\n"]
    assert run.steps["streamer"].logs == "halfway\ndone\n"


def test_the_body_can_catch_a_dead_worker_and_go_on() -> None:
    @pipeline(dynamic=True)
    def p() -> int:
        try:
            die("sigkill")
        except StepFailedError as exc:
            assert "signal 9" in str(exc)
            assert type(exc.original_exception).__name__ == "WorkerLostError"
        return whoami().load()

    run = p()  # the body handled the failure: the run completes, the step stays failed
    assert run.status.value == "completed"
    assert run.steps["die"].status.value == "failed"
    assert run.steps["whoami"].status.value == "completed"


def test_retries_give_a_killed_worker_another_process(start_method: str) -> None:
    @step(runtime="isolated", enable_cache=False, retry=StepRetryConfig(max_retries=2))
    def flaky() -> int:
        attempt = get_step_context().attempt
        print(f"attempt {attempt} in {os.getpid()}", flush=True)
        if attempt < 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return attempt

    @pipeline(dynamic=True)
    def p() -> int:
        return flaky().load()

    run = p()
    step_run = run.steps["flaky"]
    assert step_run.status.value == "completed" and step_run.output.load() == 3
    assert [a["status"] for a in step_run.attempts] == ["failed", "failed", "completed"]
    assert "signal 9" in step_run.attempts[0]["error"]["message"]
    logs = step_run.logs
    assert "attempt 1 in" in logs and "--- attempt 2 ---" in logs and "attempt 3 in" in logs


def test_exceptions_come_back_as_the_original_type_or_as_the_error_dict() -> None:
    class Unpicklable(Exception):
        def __init__(self, lock: threading.Lock) -> None:
            super().__init__("cannot travel")
            self.lock = lock

    @step(runtime="isolated", enable_cache=False)
    def raises(kind: str) -> None:
        if kind == "value":
            raise ValueError("bad value 7")
        raise Unpicklable(threading.Lock())

    caught: dict[str, StepFailedError] = {}

    @pipeline(dynamic=True)
    def p() -> None:
        for kind in ("value", "odd"):
            try:
                raises(kind)
            except StepFailedError as exc:
                caught[kind] = exc

    assert p().status.value == "completed"  # the body handled both failures
    assert isinstance(caught["value"].original_exception, ValueError)
    assert caught["value"].error["message"] == "bad value 7"
    assert "Traceback" in caught["value"].error["traceback"]
    assert caught["odd"].original_exception is None
    assert caught["odd"].error["type"].endswith("Unpicklable")
    assert caught["odd"].error["message"] == "cannot travel"


def test_a_step_that_cannot_be_pickled_fails_with_a_clear_message() -> None:
    lock = threading.Lock()

    @step(runtime="isolated")
    def holds_lock() -> int:
        return 1 if lock else 0

    @pipeline(dynamic=True)
    def p() -> None:
        holds_lock()

    with pytest.raises(StepFailedError):
        p()
    message = _last_run().steps["holds_lock"].error["message"]
    assert "could not be sent to a worker process" in message and "cloudpickle" in message


def test_isolated_results_are_cached_like_inline_ones() -> None:
    calls: list[int] = []

    @step(runtime="isolated")
    def square(x: int) -> int:
        return x * x

    @pipeline(dynamic=True)
    def p() -> None:
        calls.append(square(4).load())

    first = p()
    second = p()
    assert calls == [16, 16]
    assert first.steps["square"].status.value == "completed"
    assert second.steps["square"].status.value == "cached"
    assert second.steps["square"].original_step_run_id == first.steps["square"].id


def test_map_fans_out_over_isolated_workers_and_reduces_inline() -> None:
    @step
    def numbers() -> list[int]:
        return list(range(12))

    @step(runtime="isolated")
    def work(x: int) -> list[int]:
        return [x * 10, os.getpid()]

    @step
    def reduce(pairs: list[list[int]]) -> int:
        return sum(v for v, _ in pairs)

    @pipeline(dynamic=True)
    def p() -> int:
        return reduce(work.map(numbers())).load()

    run = p()
    assert run.steps["reduce"].output.load() == sum(x * 10 for x in range(12))
    pids = {run.steps[f"work_{i}" if i > 1 else "work"].output.load()[1] for i in range(1, 13)}
    assert len(pids) == 12 and os.getpid() not in pids
    assert run.steps["numbers"].runtime == "inline"


def test_only_the_orchestrator_opens_the_metadata_store() -> None:
    @step(runtime="isolated", enable_cache=False)
    def inspect_worker() -> dict:
        import unspool._runner as runner

        engine = sys.modules.get("unspool._engine")
        return {
            "metadata_store_imported": "unspool._metadata_store" in sys.modules,
            "open_environments": len(engine._envs) if engine else 0,
            "spec_fields": sorted(runner.StepSpec.__dataclass_fields__),
        }

    @pipeline(dynamic=True)
    def p() -> dict:
        return inspect_worker().load()

    seen = p().steps["inspect_worker"].output.load()
    assert seen["metadata_store_imported"] is False
    assert seen["open_environments"] == 0
    assert not [f for f in seen["spec_fields"] if "store_url" in f and "artifact" not in f]


def test_fail_fast_kills_running_isolated_steps_and_records_them_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"

    @step(runtime="isolated", enable_cache=False)
    def sleeper() -> None:
        pid_file.write_text(str(os.getpid()))
        time.sleep(60)

    @step(enable_cache=False)
    def fails() -> None:
        _read_pid(pid_file)  # the sleeper runs in its worker
        raise RuntimeError("fail fast")

    @pipeline(dynamic=True, execution_mode=ExecutionMode.FAIL_FAST)
    def p() -> None:
        sleeper.submit()
        fails.submit()

    with pytest.raises(RunFailedError):  # without waiting out the sleeper's 60 s
        p()
    run = _last_run()
    assert run.steps["fails"].status.value == "failed"
    assert run.steps["sleeper"].status.value == "stopped"
    assert "killed while running" in run.steps["sleeper"].error["message"]
    _wait_dead(_read_pid(pid_file))


def test_a_timeout_kills_the_worker(tmp_path: Path) -> None:
    pid_file = tmp_path / "slow.pid"

    @step(runtime="isolated", enable_cache=False, timeout=4)
    def slow() -> None:
        pid_file.write_text(str(os.getpid()))
        time.sleep(60)

    @pipeline(dynamic=True)
    def p() -> None:
        slow()

    with pytest.raises(StepFailedError):
        p()
    error = _last_run().steps["slow"].error
    assert error["type"] == "TimeoutError" and "its worker was stopped" in error["message"]
    _wait_dead(_read_pid(pid_file))


def _spans(run) -> list[list[float]]:
    return sorted(s.output.load() for s in run.steps.values())


@step(runtime="isolated", enable_cache=False)
def timed(i: int) -> list[float]:
    start = time.time()
    time.sleep(0.4)
    return [start, time.time()]


@step(runtime="isolated", enable_cache=False)
def peak(i: int, folder: str, items: int) -> int:
    """The most items this one saw running at once. It waits until it meets another one, until all
    the others have finished (then there is nobody left to meet), or, when the test says the items
    run one at a time, not at all; 60 s without either means the items could not run together."""
    here = Path(folder)
    (here / f"running-{i}").touch()
    most, deadline = 1, time.monotonic() + 60
    while most < 2 and time.monotonic() < deadline:
        most = max(most, len(list(here.glob("running-*"))))
        if (here / "one-at-a-time").exists() or len(list(here.glob("finished-*"))) == items - 1:
            break
        time.sleep(0.01)
    (here / f"running-{i}").unlink()
    (here / f"finished-{i}").touch()
    return most


def test_cpu_requests_bound_how_many_isolated_steps_run_at_once(tmp_path: Path) -> None:
    def run_with(cpu: int, folder: Path) -> list[int]:
        folder.mkdir()
        if cpu == 2:
            (folder / "one-at-a-time").touch()  # nothing to wait for: each step sees only itself

        @pipeline(dynamic=True, orchestrator={"type": "process", "cpus": 2})
        def p() -> None:
            peak.with_options(settings={"resources": {"cpu": cpu}}).map(
                [0, 1, 2, 3], folder=unmapped(str(folder)), items=unmapped(4)
            )

        return [s.output.load() for s in p().steps.values()]

    assert run_with(2, tmp_path / "two") == [1, 1, 1, 1]  # each takes both CPUs: one at a time
    assert max(run_with(1, tmp_path / "one")) == 2  # two fit at once (and never more)
    recorded = _last_run().steps["peak"].config["settings"]
    assert recorded == {"resources": {"cpu": 1}}


def test_a_step_asking_for_more_than_the_machine_still_runs_alone() -> None:
    @pipeline(dynamic=True)
    def p() -> None:
        timed.with_options(settings={"resources": {"cpu": 10_000, "memory": "100TB"}})(0)

    assert p().status.value == "completed"


def test_bad_resource_settings_fail_the_step_with_what_is_allowed() -> None:
    @pipeline(dynamic=True)
    def p() -> None:
        timed.with_options(settings={"resources": {"cpus": 2}})(0)

    with pytest.raises(StepFailedError):
        p()
    message = _last_run().steps["timed"].error["message"]
    assert "unknown key(s) ['cpus']" in message and "cpu_count" in message


def test_orchestrator_type_process_isolates_every_step() -> None:
    @step
    def plain() -> int:
        return os.getpid()

    @pipeline(dynamic=True, orchestrator={"type": "process"})
    def p() -> None:
        plain()

    run = p()
    assert run.steps["plain"].output.load() != os.getpid()
    assert run.config["orchestrator"] == {"type": "process"}


def test_a_lost_zygote_fails_only_its_steps_and_the_retry_gets_a_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNSPOOL_ISOLATED_START", "zygote")

    @step(runtime="isolated", enable_cache=False, retry=StepRetryConfig(max_retries=1))
    def kill_zygote() -> int:
        if get_step_context().attempt == 1:
            os.kill(os.getppid(), signal.SIGKILL)  # the zygote; this worker dies with it
            time.sleep(30)
        return 1

    @pipeline(dynamic=True)
    def p() -> int:
        return kill_zygote().load()

    run = p()
    attempts = run.steps["kill_zygote"].attempts
    assert [a["status"] for a in attempts] == ["failed", "completed"]
    assert "zygote" in attempts[0]["error"]["message"] or "signal 9" in attempts[0]["error"]["message"]


ORCHESTRATOR = textwrap.dedent(
    """
    import os, time
    from unspool import pipeline, step

    @step(runtime="isolated", enable_cache=False)
    def quick(x: int) -> int:
        return x + 1

    @step(runtime="isolated", enable_cache=False)
    def hang(x: int) -> int:
        with open(os.environ["PID_FILE"], "w") as f:
            f.write(str(os.getpid()))
        if os.environ.get("HANG") == "1":
            time.sleep(120)
        return x * 2

    @pipeline(dynamic=True)
    def orphan_check():
        hang(quick(1))

    if __name__ == "__main__":
        orphan_check()
    """
)


def test_killing_the_orchestrator_kills_its_workers_and_the_run_resumes(tmp_path: Path, home: Path) -> None:
    script = tmp_path / "orphan_check.py"
    script.write_text(ORCHESTRATOR)
    pid_file = tmp_path / "worker.pid"
    env = {**os.environ, "UNSPOOL_HOME": str(home), "PID_FILE": str(pid_file), "HANG": "1",
           "UNSPOOL_PROGRESS": "off"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)
    worker = _read_pid(pid_file)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    _wait_dead(worker)  # the worker does not outlive its orchestrator

    env["HANG"] = "0"
    code = "from unspool import Client; r = Client().list_pipeline_runs()[0]; " \
           "print(Client().resume_pipeline_run(r.id).status.value)"
    resumed = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    from unspool.testing import reset_stores

    reset_stores()
    run = Client().list_pipeline_runs()[0]
    assert run.status.value == "completed"
    assert run.steps["hang"].output.load() == 4
    assert run.steps["quick"].status.value == "completed"
