"""Failure semantics: execution modes, StepFailedError, retries, hooks, timeouts."""

from __future__ import annotations

import threading
import time

import pytest

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


@step(enable_cache=False)
def boom(x: int = 0) -> int:
    raise ValueError(f"boom {x}")


@step(enable_cache=False)
def ok(x: int = 0) -> int:
    return x + 1


def _last_run():
    return Client().list_pipeline_runs()[0]


def test_sync_failure_raises_step_failed_error_that_the_body_can_catch() -> None:
    caught = {}

    @pipeline(dynamic=True)
    def p():
        try:
            boom(1)
        except StepFailedError as exc:
            caught["exc"] = exc
        ok(2)

    with pytest.raises(RunFailedError, match="boom"):
        p()
    exc = caught["exc"]
    assert isinstance(exc.original_exception, ValueError)
    assert exc.invocation_id == "boom"
    assert exc.step_run.status.value == "failed"
    run = _last_run()
    assert run.status.value == "failed"
    assert run.error["failed_steps"] == ["boom"]
    assert run.steps["ok"].status.value == "completed"  # the body went on
    err = run.steps["boom"].error
    assert err["type"] == "ValueError" and err["message"] == "boom 1" and "Traceback" in err["traceback"]


def test_future_result_and_load_raise_step_failed_error() -> None:
    @pipeline(dynamic=True)
    def p():
        fut = boom.submit(3)
        with pytest.raises(StepFailedError):
            fut.result()
        with pytest.raises(StepFailedError):
            fut.load()

    with pytest.raises(RunFailedError):
        p()


def test_continue_on_failure_skips_dependants_and_runs_independent_work() -> None:
    @pipeline(dynamic=True, execution_mode="CONTINUE_ON_FAILURE")
    def p():
        bad = boom.submit(1)
        dependant = ok.submit(bad)
        independent = ok.submit(10)
        with pytest.raises(StepFailedError, match="upstream step 'boom' failed"):
            dependant.result()
        assert independent.load() == 11

    with pytest.raises(RunFailedError, match="boom"):
        p()
    run = _last_run()
    statuses = {k: s.status.value for k, s in run.steps.items()}
    assert statuses == {"boom": "failed", "ok": "skipped", "ok_2": "completed"}
    assert run.error["failed_steps"] == ["boom"]


def test_continue_on_failure_in_static_pipeline() -> None:
    @pipeline(execution_mode=ExecutionMode.CONTINUE_ON_FAILURE)
    def p():
        ok(boom(1))
        ok(5)

    with pytest.raises(RunFailedError):
        p()
    statuses = {k: s.status.value for k, s in _last_run().steps.items()}
    assert statuses == {"boom": "failed", "ok": "skipped", "ok_2": "completed"}


def test_fail_fast_stops_queued_steps_and_interrupts_the_body() -> None:
    gate = threading.Event()
    reached = []

    @step(enable_cache=False)
    def wait_for_gate(x: int) -> int:
        gate.wait(10)
        return x

    @pipeline(dynamic=True, execution_mode="FAIL_FAST", max_parallelism=1)
    def p():
        first = boom.submit(1)
        queued = [wait_for_gate.submit(i) for i in range(3)]
        first.wait()
        gate.set()
        reached.append("before")
        ok(1)  # the body is interrupted here
        reached.append("after")
        return queued

    with pytest.raises(StepFailedError, match="stopping"):
        p()
    assert reached == ["before"]
    run = _last_run()
    assert run.status.value == "failed"
    statuses = {k: s.status.value for k, s in run.steps.items()}
    assert statuses["boom"] == "failed"
    assert {statuses[f"wait_for_gate{s}"] for s in ("", "_2", "_3")} == {"stopped"}


def test_stop_on_failure_lets_running_steps_finish() -> None:
    started = threading.Event()

    @step(enable_cache=False)
    def slow(x: int) -> int:
        started.set()
        time.sleep(0.3)
        return x

    @step(enable_cache=False)
    def fail_after_start() -> int:
        assert started.wait(60)
        raise RuntimeError("late failure")

    @pipeline(dynamic=True, execution_mode="STOP_ON_FAILURE")
    def p():
        running = slow.submit(1)
        failing = fail_after_start.submit()
        failing.wait()
        running.wait()
        with pytest.raises(StepFailedError):
            ok(2)

    with pytest.raises(RunFailedError):
        p()
    statuses = {k: s.status.value for k, s in _last_run().steps.items()}
    assert statuses == {"slow": "completed", "fail_after_start": "failed", "ok": "stopped"}


def test_retries_record_every_attempt_and_keep_all_logs() -> None:
    attempts = []

    @step(enable_cache=False, retry=StepRetryConfig(max_retries=2, delay=0.01, backoff=2))
    def flaky() -> int:
        attempts.append(get_step_context().attempt)
        print(f"attempt {len(attempts)}")
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return 42

    @pipeline(dynamic=True)
    def p():
        assert flaky().load() == 42

    run = p()
    step_run = run.steps["flaky"]
    assert attempts == [1, 2, 3]
    assert step_run.status.value == "completed"
    assert [a["attempt"] for a in step_run.attempts] == [1, 2, 3]
    assert [a["status"] for a in step_run.attempts] == ["failed", "failed", "completed"]
    assert step_run.attempts[0]["error"]["type"] == "ConnectionError"
    logs = step_run.logs
    assert "attempt 1" in logs and "attempt 2" in logs and "attempt 3" in logs


def test_pipeline_level_retry_applies_to_steps_and_gives_up() -> None:
    @pipeline(dynamic=True, retry=StepRetryConfig(max_retries=1))
    def p():
        boom(7)

    with pytest.raises(StepFailedError):
        p()
    step_run = _last_run().steps["boom"]
    assert step_run.status.value == "failed"
    assert len(step_run.attempts) == 2


def test_step_hooks_run_and_a_failing_hook_never_masks_the_outcome() -> None:
    calls = []

    def on_success():
        calls.append("success")
        raise RuntimeError("hook broke")

    def on_failure(exc: BaseException):
        calls.append(f"failure:{exc}")

    @step(enable_cache=False, on_success=on_success)
    def good() -> int:
        return 1

    @step(enable_cache=False, on_failure=on_failure)
    def bad() -> int:
        raise KeyError("k")

    @pipeline(dynamic=True)
    def p():
        good()
        try:
            bad()
        except StepFailedError:
            pass

    with pytest.raises(RunFailedError):
        p()
    run = _last_run()
    assert calls == ["success", "failure:'k'"]
    assert run.steps["good"].status.value == "completed"
    assert run.steps["good"].metadata["hook_errors"][0]["message"] == "hook broke"
    assert run.steps["bad"].status.value == "failed"


def test_pipeline_hooks_init_cleanup_success_failure() -> None:
    calls = []

    @pipeline(
        dynamic=True,
        on_init=lambda: calls.append("init"),
        on_cleanup=lambda: calls.append("cleanup"),
        on_success=lambda: calls.append("success"),
        on_failure=lambda exc: calls.append(f"failure:{type(exc).__name__}"),
    )
    def p(fail: bool):
        ok(1)
        if fail:
            boom(1)

    p(False)
    assert calls == ["init", "success", "cleanup"]
    calls.clear()
    with pytest.raises(StepFailedError):
        p(True)
    assert calls == ["init", "failure:StepFailedError", "cleanup"]


def test_timeout_marks_the_step_failed_and_the_body_goes_on() -> None:
    release = threading.Event()

    @step(enable_cache=False, timeout=0.2)
    def hangs() -> int:
        release.wait(10)
        return 1

    @pipeline(dynamic=True)
    def p():
        try:
            hangs()
        except StepFailedError as exc:
            assert "timeout" in str(exc)
        ok(1)

    with pytest.raises(RunFailedError):
        p()
    release.set()
    run = _last_run()
    assert run.steps["hangs"].status.value == "failed"
    assert run.steps["hangs"].error["type"] == "TimeoutError"
    assert run.steps["ok"].status.value == "completed"


def test_mapped_failure_surfaces_when_results_are_consumed() -> None:
    @step(enable_cache=False)
    def maybe(x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return x

    @step(enable_cache=False)
    def total(values: list[int]) -> int:
        return sum(values)

    @pipeline(dynamic=True)
    def p():
        results = maybe.map([1, 2, 3])
        with pytest.raises(StepFailedError, match="maybe_2"):
            results.load()
        with pytest.raises(StepFailedError, match="upstream step 'maybe_2' failed"):
            total(results)

    with pytest.raises(RunFailedError):
        p()
    statuses = {k: s.status.value for k, s in _last_run().steps.items()}
    assert statuses == {"maybe": "completed", "maybe_2": "failed", "maybe_3": "completed", "total": "skipped"}
