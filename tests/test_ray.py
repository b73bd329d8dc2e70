"""The Ray executor: ``orchestrator: {type: ray}`` runs steps as tasks on a real Ray cluster.

What is guaranteed: isolated steps (every step with ``all_steps: true``) run in Ray
workers while the body and all metadata writes stay in the driver; fan-out, failures,
retries and caching behave as everywhere else; a dying Ray worker fails only the steps it
held, with unspool's retries; a step asking for more than the cluster has fails at once;
FAIL_FAST and timeouts cancel tasks; without a running Ray the executor starts one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _ray_support import import_ray, local_ray_cluster
from unspool import (
    Client,
    ExecutionMode,
    RunFailedError,
    StepFailedError,
    StepRetryConfig,
    get_step_context,
    pipeline,
    step,
)

ray = import_ray()
pytestmark = pytest.mark.timeout(180)
RAY = {"type": "ray"}


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    yield from local_ray_cluster(num_cpus=2)


def _last_run():
    return Client().list_pipeline_runs()[0]


@step(runtime="isolated", enable_cache=False)
def where() -> dict:
    import sys

    engine = sys.modules.get("unspool._engine")
    return {
        "pid": os.getpid(),
        "in_ray": ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None,
        "open_stores": len(engine._envs) if engine else 0,
    }


@step(enable_cache=False)
def driver_pid() -> int:
    return os.getpid()


def test_isolated_steps_run_in_ray_workers_and_inline_ones_in_the_driver() -> None:
    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> None:
        where()
        driver_pid()

    run = p()
    remote = run.steps["where"].output.load()
    assert remote["pid"] != os.getpid() and remote["in_ray"] and remote["open_stores"] == 0
    assert run.steps["driver_pid"].output.load() == os.getpid()
    assert run.config["orchestrator"] == {"type": "ray", "all_steps": False}


def test_all_steps_sends_inline_steps_to_ray_too() -> None:
    @pipeline(dynamic=True, orchestrator={"type": "ray", "all_steps": True})
    def p() -> None:
        driver_pid()

    assert p().steps["driver_pid"].output.load() != os.getpid()


def test_map_fans_out_over_ray_tasks() -> None:
    @step
    def items() -> list[int]:
        return list(range(16))

    @step(runtime="isolated")
    def square(x: int) -> int:
        print(f"squaring {x}")
        return x * x

    @step
    def total(values: list[int]) -> int:
        return sum(values)

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> int:
        return total(square.map(items())).load()

    run = p()
    assert run.steps["total"].output.load() == sum(x * x for x in range(16))
    assert run.steps["square_16"].logs == "squaring 15\n"
    assert len([s for s in run.steps.values() if s.name == "square"]) == 16


def test_a_failing_step_reports_its_exception_and_skips_its_dependants() -> None:
    @step(runtime="isolated", enable_cache=False)
    def bad() -> int:
        raise ValueError("no good")

    @step
    def after(x: int) -> int:
        return x

    caught = {}

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> None:
        fut = bad.submit()
        later = after.submit(fut)
        try:
            later.result()
        except StepFailedError as exc:
            caught["after"] = exc
        try:
            fut.result()
        except StepFailedError as exc:
            caught["bad"] = exc

    assert p().status.value == "completed"  # the body handled the failure
    assert isinstance(caught["bad"].original_exception, ValueError)
    run = _last_run()
    assert run.steps["bad"].error["message"] == "no good"
    assert run.steps["after"].status.value == "skipped"


def test_a_dying_ray_worker_fails_only_its_step_and_retries_apply() -> None:
    @step(runtime="isolated", enable_cache=False, retry=StepRetryConfig(max_retries=1))
    def fragile(x: int) -> int:
        print(f"attempt {get_step_context().attempt} of {x}", flush=True)
        if x == 2 and get_step_context().attempt == 1:
            os._exit(3)
        return x

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> None:
        fragile.map([1, 2, 3])

    run = p()
    assert {s.output.load() for s in run.steps.values()} == {1, 2, 3}
    died = run.steps["fragile_2"]
    assert [a["status"] for a in died.attempts] == ["failed", "completed"]
    assert "Ray worker died while running step 'fragile_2'" in died.attempts[0]["error"]["message"]
    assert "attempt 1 of 2" in died.logs and "attempt 2 of 2" in died.logs  # the log survived
    assert [a["status"] for a in run.steps["fragile"].attempts] == ["completed"]


def test_without_retries_a_dead_worker_is_a_failed_step_with_a_clear_message() -> None:
    @step(runtime="isolated", enable_cache=False)
    def dies() -> None:
        os._exit(1)

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> None:
        dies()

    with pytest.raises(StepFailedError, match="Ray worker died while running step 'dies'"):
        p()
    assert _last_run().steps["dies"].error["type"] == "WorkerLostError"


def test_results_are_cached_across_runs() -> None:
    @step(runtime="isolated")
    def compute(x: int) -> int:
        return x + 100

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> int:
        return compute(1).load()

    first, second = p(), p()
    assert first.steps["compute"].status.value == "completed"
    assert second.steps["compute"].status.value == "cached"


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"cpu": 64}, "needs CPU=64 but the whole Ray cluster has CPU=2"),
        ({"gpu": 1}, "needs GPU=1 but the whole Ray cluster has GPU=0"),
        ({"custom": {"tpu": 2}}, "needs tpu=2 but the whole Ray cluster has tpu=0"),
    ],
)
def test_a_step_asking_for_more_than_the_cluster_has_fails_at_once(resources: dict, expected: str) -> None:
    @step(runtime="isolated", enable_cache=False, settings={"resources": resources})
    def greedy() -> None: ...

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> None:
        greedy()

    with pytest.raises(StepFailedError, match=expected):  # at once: the suite's timeout catches a wait
        p()


def test_step_resources_become_ray_task_resources() -> None:
    @step(runtime="isolated", enable_cache=False, settings={"resources": {"cpu": 2, "memory": "100MB"}})
    def big() -> dict:
        return ray.get_runtime_context().get_assigned_resources()

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> None:
        big()

    assigned = p().steps["big"].output.load()
    assert assigned.get("CPU") == 2.0
    assert assigned.get("memory") == 100_000_000


def test_fail_fast_cancels_running_ray_tasks_and_records_them_stopped(tmp_path: Path) -> None:
    started = tmp_path / "started"

    @step(runtime="isolated", enable_cache=False)
    def sleeper() -> None:
        started.write_text("yes")
        time.sleep(120)

    @step(enable_cache=False)
    def fails() -> None:
        while not started.exists():  # the sleeper runs in its Ray task
            time.sleep(0.05)
        raise RuntimeError("stop now")

    @pipeline(dynamic=True, execution_mode=ExecutionMode.FAIL_FAST, orchestrator=RAY)
    def p() -> None:
        sleeper.submit()
        fails.submit()

    with pytest.raises(RunFailedError):  # without waiting out the sleeper's 120 s
        p()
    run = _last_run()
    assert run.steps["sleeper"].status.value == "stopped"
    assert run.steps["fails"].status.value == "failed"


def test_a_timeout_cancels_the_ray_task() -> None:
    @step(runtime="isolated", enable_cache=False, timeout=5)
    def slow() -> None:
        time.sleep(120)

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> None:
        slow()

    with pytest.raises(StepFailedError, match="timeout of 5"):  # not after the task's 120 s
        p()


def _hog(started: Path, release: Path):
    """A step holding the whole test cluster (2 CPUs) from when it writes ``started`` until
    ``release`` exists: what is submitted meanwhile has to wait."""

    @step(runtime="isolated", enable_cache=False, settings={"resources": {"cpu": 2}})
    def hog() -> None:
        started.write_text("")
        while not release.exists():
            time.sleep(0.01)

    return hog


def _wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.01)


def test_steps_waiting_for_the_cluster_share_tasks_yet_keep_their_own_logs_results_and_retries(
    tmp_path: Path,
) -> None:
    started, release, failed_once = tmp_path / "started", tmp_path / "release", tmp_path / "failed"
    hog = _hog(started, release)

    @step(runtime="isolated", enable_cache=False, retry=StepRetryConfig(max_retries=1))
    def echo(x: int) -> dict:
        print(f"echo {x}")
        if x == 5 and not failed_once.exists():
            failed_once.write_text("")
            raise ValueError("five fails once")
        return {"x": x, "task": ray.get_runtime_context().get_task_id()}

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> list:
        hog.submit()
        _wait_for(started)
        outs = echo.map(list(range(12)))  # 4 tasks wait in Ray, the other 8 steps here
        release.write_text("")
        return [out.load() for out in outs]

    run = p()
    steps = sorted((s for s in run.steps.values() if s.name == "echo"), key=lambda s: s.output.load()["x"])
    seen = [s.output.load() for s in steps]
    assert [r["x"] for r in seen] == list(range(12))
    assert len({r["task"] for r in seen}) < 12  # some steps shared a Ray task
    for x, s in enumerate(steps):
        assert s.status.value == "completed"
        if x != 5:
            assert s.logs == f"echo {x}\n"  # each step's log holds its own output only
    five = steps[5]
    assert [a["status"] for a in five.attempts] == ["failed", "completed"]
    assert "five fails once" in five.attempts[0]["error"]["message"]


def test_a_stop_drops_steps_not_sent_to_ray_yet_and_they_never_start(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    hog = _hog(started, release)

    @step(runtime="isolated", enable_cache=False, settings={"resources": {"cpu": 2}})
    def big(i: int) -> int:
        (tmp_path / f"ran-{i}").write_text("")
        return i

    @step(enable_cache=False)
    def fails() -> None:
        raise RuntimeError("stop")

    @pipeline(dynamic=True, orchestrator=RAY, execution_mode=ExecutionMode.STOP_ON_FAILURE)
    def p() -> None:
        hog.submit()
        _wait_for(started)
        for i in range(3):  # with the hog, Ray holds at most one more task of this kind
            big.submit(i)
        try:
            fails()
        except StepFailedError:
            pass
        release.write_text("")

    with pytest.raises(RunFailedError):
        p()
    run = _last_run()
    bigs = {s.output.load() if s.status.value == "completed" else s.id: s for s in run.steps.values() if s.name == "big"}
    stopped = [s for s in bigs.values() if s.status.value == "stopped"]
    assert stopped and len(bigs) == 3
    for s in stopped:
        assert s.error["message"].startswith("not started")
    ran = sorted(int(f.name.split("-")[1]) for f in tmp_path.glob("ran-*"))
    assert ran == sorted(k for k in bigs if isinstance(k, int))  # the stopped ones never ran


def test_a_timeout_counts_from_when_the_ray_task_starts(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    hog = _hog(started, release)

    @step(runtime="isolated", enable_cache=False, timeout=3)
    def quick() -> int:
        return 1

    @step(runtime="isolated", enable_cache=False, timeout=3)
    def stuck() -> None:
        time.sleep(120)

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> None:
        hog.submit()
        _wait_for(started)
        waiting = quick.submit()
        submitted = time.monotonic()
        # the point of the test is a wait in Ray's queue longer than the step's timeout
        while time.monotonic() - submitted < 4.5:
            time.sleep(0.05)
        release.write_text("")
        waiting.result()
        stuck()

    with pytest.raises(StepFailedError, match="timeout of 3"):  # a running step still times out
        p()
    run = _last_run()
    assert run.steps["quick"].status.value == "completed"
    assert run.steps["stuck"].status.value == "failed"


def test_without_ray_installed_steps_fail_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError

    @pipeline(dynamic=True, orchestrator=RAY)
    def p() -> None:
        where()

    with pytest.raises(StepFailedError, match=r"needs Ray.*pip install 'unspool\[ray\]'"):
        p()


STARTS_ITS_OWN = textwrap.dedent(
    """
    import os, sys, ray
    from unspool import pipeline, step

    @step(runtime="isolated")
    def remote_pid() -> int:
        return os.getpid()

    @pipeline(dynamic=True, orchestrator={"type": "ray", "num_cpus": 1})
    def own_cluster():
        assert remote_pid().load() != os.getpid()

    if __name__ == "__main__":
        assert not ray.is_initialized()
        status = own_cluster().status.value
        with open(sys.argv[1], "w") as f:  # not stdout: Ray forwards worker output there at any time
            f.write(f"{status} {ray.cluster_resources()['CPU']}")
    """
)


def test_without_a_running_ray_the_executor_starts_a_local_instance(tmp_path: Path, home: Path) -> None:
    script = tmp_path / "own_cluster.py"
    script.write_text(STARTS_ITS_OWN)
    env = {**os.environ, "UNSPOOL_HOME": str(home), "UNSPOOL_PROGRESS": "off"}
    result = tmp_path / "result.txt"
    proc = subprocess.run([sys.executable, str(script), str(result)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result.read_text() == "completed 1.0"


JOINS = textwrap.dedent(
    """
    import os, sys, ray
    from unspool import pipeline, step

    @step(runtime="isolated", enable_cache=False)
    def remote_pid(x: int) -> int:
        return os.getpid()

    @pipeline(dynamic=True)
    def joined():
        pids = [remote_pid.submit(i) for i in range(3)]
        assert all(p.load() != os.getpid() for p in pids)

    if __name__ == "__main__":
        run = joined.with_options(orchestrator={"type": "ray", "address": sys.argv[1]})()
        with open(sys.argv[2], "w") as f:  # not stdout: Ray forwards worker output there at any time
            f.write(f"{run.status.value} {ray.cluster_resources()['CPU']}")
    """
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def test_address_joins_a_running_cluster_directly_and_through_ray_client(tmp_path: Path, home: Path) -> None:
    import signal
    import tempfile

    gcs, client = _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ur-", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "UNSPOOL_HOME": str(home), "UNSPOOL_PROGRESS": "off"}
    head = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", f"--port={gcs}",
         f"--ray-client-server-port={client}", "--num-cpus=1", "--include-dashboard=false", "--block",
         f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    script = tmp_path / "joins.py"
    script.write_text(JOINS)
    result = tmp_path / "result.txt"
    try:
        import socket

        host = socket.gethostbyname(socket.gethostname())
        for address in (f"{host}:{gcs}", f"ray://{host}:{client}"):
            result.unlink(missing_ok=True)
            deadline = time.time() + 150
            while True:  # the head takes a while to accept clients: retry until it does
                proc = subprocess.run([sys.executable, str(script), address, str(result)], env=env,
                                      cwd=tmp_path, capture_output=True, text=True, timeout=120)
                if proc.returncode == 0 or time.time() > deadline or head.poll() is not None:
                    break
                time.sleep(2)
            assert proc.returncode == 0, (address, proc.stderr[-3000:])
            assert result.read_text() == "completed 1.0", address
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)


@step(runtime="isolated", enable_cache=False)
def maybe_fail(flag: str) -> int:
    if Path(flag).exists():
        raise RuntimeError("the flag is up")
    return 7


@step(enable_cache=False)
def first_part() -> int:
    return 1


@pipeline(dynamic=True, orchestrator=RAY)
def resumable(flag: str) -> None:
    one = first_part()
    maybe_fail(flag)
    del one


def test_a_failed_ray_run_resumes_as_the_same_run_reusing_completed_steps(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.write_text("up")
    with pytest.raises(StepFailedError):
        resumable(str(flag))
    failed = _last_run()
    assert failed.steps["maybe_fail"].status.value == "failed"
    flag.unlink()
    resumed = Client().resume_pipeline_run(failed.id)
    assert resumed.id == failed.id and resumed.status.value == "completed"
    assert resumed.steps["first_part"].id == failed.steps["first_part"].id  # reused, not re-run
    assert resumed.steps["maybe_fail"].output.load() == 7
