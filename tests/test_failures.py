"""Failure semantics: execution modes, StepFailedError, retries, hooks, timeouts."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

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

    run = p()  # the body handled the failure: the run completes
    exc = caught["exc"]
    assert isinstance(exc.original_exception, ValueError)
    assert exc.invocation_id == "boom"
    assert exc.step_run.status.value == "failed"
    assert run.status.value == "completed"
    assert run.failed_steps == ["boom"]
    assert run.metadata["handled_failures"] == ["boom"]
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

    assert p().status.value == "completed"  # handled in the body


def test_continue_on_failure_skips_dependants_and_runs_independent_work() -> None:
    @pipeline(dynamic=True, execution_mode="CONTINUE_ON_FAILURE")
    def p():
        bad = boom.submit(1)
        dependant = ok.submit(bad)
        independent = ok.submit(10)
        with pytest.raises(StepFailedError, match="upstream step 'boom' failed"):
            dependant.result()
        assert independent.load() == 11

    run = p()  # the body saw (and handled) the failure through its skipped dependant
    statuses = {k: s.status.value for k, s in run.steps.items()}
    assert statuses == {"boom": "failed", "ok": "skipped", "ok_2": "completed"}
    assert run.status.value == "completed"
    assert run.failed_steps == ["boom"]


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

    run = p()
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

    run = p()
    release.set()
    assert run.status.value == "completed"
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

    assert p().status.value == "completed"
    statuses = {k: s.status.value for k, s in _last_run().steps.items()}
    assert statuses == {"maybe": "completed", "maybe_2": "failed", "maybe_3": "completed", "total": "skipped"}


# -- a failure the body handled (issue 12, item 1) --------------------------------------------------

@step(enable_cache=False)
def flaky(x: int) -> int:
    if x == 2:
        raise ValueError("two is unlucky")
    return x


@step(enable_cache=False)
def total(values: list[int]) -> int:
    return sum(values)


def test_a_failure_the_body_caught_leaves_the_run_completed() -> None:
    @pipeline(dynamic=True)
    def p():
        good = []
        for x in range(4):
            try:
                good.append(flaky(x))
            except StepFailedError:
                pass
        return total(good)

    run = p()  # returns normally: the body handled the failure
    assert run.status.value == "completed"
    assert run.error is None
    statuses = {k: s.status.value for k, s in run.steps.items()}
    assert statuses == {"flaky": "completed", "flaky_2": "completed", "flaky_3": "failed",
                        "flaky_4": "completed", "total": "completed"}
    assert run.steps["total"].output.load() == 0 + 1 + 3
    assert run.metadata["step_counts"]["failed"] == 1
    assert run.metadata["handled_failures"] == ["flaky_3"]


def test_a_caught_failure_of_a_submitted_or_mapped_step_leaves_the_run_completed() -> None:
    @pipeline(dynamic=True)
    def p():
        fut = flaky.submit(2)
        try:
            fut.load()
        except StepFailedError:
            pass
        results = flaky.map([1, 2, 3])
        try:
            total(results)  # skipped because flaky_3 failed: the body sees that here
        except StepFailedError:
            pass

    run = p()
    assert run.status.value == "completed"
    statuses = {k: s.status.value for k, s in run.steps.items()}
    assert statuses["flaky"] == "failed" and statuses["flaky_3"] == "failed"
    assert statuses["total"] == "skipped"
    assert sorted(run.metadata["handled_failures"]) == ["flaky", "flaky_3"]


def test_a_failure_the_body_never_looked_at_still_fails_the_run() -> None:
    @pipeline(dynamic=True)
    def p():
        try:
            flaky(1)
        except StepFailedError:
            pass
        flaky.submit(2)  # never waited for: nobody handled its failure

    with pytest.raises(RunFailedError, match="flaky_2"):
        p()
    run = _last_run()
    assert run.status.value == "failed"
    assert run.error["failed_steps"] == ["flaky_2"]


def test_a_handled_failure_under_stop_on_failure_still_fails_the_run() -> None:
    @pipeline(dynamic=True, execution_mode="STOP_ON_FAILURE")
    def p():
        try:
            flaky(2)
        except StepFailedError:
            pass

    with pytest.raises(RunFailedError, match="flaky"):
        p()
    assert _last_run().status.value == "failed"


def test_a_caught_failure_of_an_isolated_step_leaves_the_run_completed() -> None:
    iso = flaky.with_options(runtime="isolated")

    @pipeline(dynamic=True)
    def p():
        try:
            iso(2)
        except StepFailedError as exc:
            assert "two is unlucky" in str(exc)
        return iso(1)

    run = p()
    assert run.status.value == "completed"
    assert run.steps["flaky"].status.value == "failed"
    assert run.steps["flaky_2"].status.value == "completed"


def test_a_failed_child_run_the_body_caught_leaves_the_parent_completed() -> None:
    @pipeline(dynamic=True)
    def child(x: int):
        return flaky(x)

    @pipeline(dynamic=True)
    def parent():
        try:
            child(2)
        except StepFailedError:
            pass
        fut = child.submit(2)
        try:
            fut.result()
        except StepFailedError:
            pass
        return child(1)

    run = parent()
    assert run.status.value == "completed"
    kids = {c.invocation_id: c.status.value for c in run.child_runs}
    assert kids == {"pipeline:child": "failed", "pipeline:child_2": "failed", "pipeline:child_3": "completed"}


def test_a_failed_child_run_nobody_waited_for_fails_the_parent() -> None:
    @pipeline(dynamic=True)
    def child(x: int):
        return flaky(x)

    @pipeline(dynamic=True)
    def parent():
        child.submit(2)

    with pytest.raises(RunFailedError, match="child"):
        parent()
    assert _last_run().status.value == "failed"


# -- SystemExit and KeyboardInterrupt in a step (issue 12, item 3) ------------------------------------

def test_sys_exit_in_a_step_is_a_step_failure_the_body_can_catch() -> None:
    import argparse

    @step(enable_cache=False)
    def exits(code: int) -> int:
        import sys

        sys.exit(code)

    @step(enable_cache=False)
    def parses() -> int:
        parser = argparse.ArgumentParser(prog="tool")
        parser.add_argument("--n", type=int, required=True)
        return parser.parse_args([]).n

    seen = []

    @pipeline(dynamic=True)
    def p():
        for call in (lambda: exits(3), lambda: exits.submit(4).result(), parses,
                     lambda: exits.with_options(runtime="isolated")(5)):
            try:
                call()
            except StepFailedError as exc:
                seen.append(exc.invocation_id)
        return ok(1)

    run = p()  # the orchestrating process was not stopped, and the body handled every failure
    assert seen == ["exits", "exits_2", "parses", "exits_3"]
    assert run.status.value == "completed"
    steps = run.steps
    for inv_id in ("exits", "exits_2", "parses", "exits_3"):
        assert steps[inv_id].status.value == "failed", inv_id
        assert steps[inv_id].error["type"] == "SystemExit"
    assert "sys.exit(3)" in steps["exits"].error["message"]
    assert "required" in steps["parses"].logs  # argparse's own message is in the step's log


def test_keyboard_interrupt_in_the_body_thread_stops_the_run_and_records_the_step_stopped() -> None:
    @step(enable_cache=False)
    def interrupted() -> int:
        raise KeyboardInterrupt  # what Ctrl-C does to a step running in the body's thread

    @pipeline(dynamic=True)
    def p():
        try:
            interrupted()
        except StepFailedError:
            pass  # not a step failure: never delivered as one
        ok(1)

    with pytest.raises(KeyboardInterrupt):
        p()
    run = _last_run()
    assert run.status.value == "stopped"
    assert run.steps["interrupted"].status.value == "stopped"
    assert "ok" not in run.steps


# -- a timed-out step keeps its logs (issue 12, item 9) ------------------------------------------------

def _wait_until(condition, what: str, limit: float = 30.0) -> None:
    """Wait for a condition on the stores (a bounded wait, never a fixed sleep)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


def test_a_timed_out_step_keeps_what_it_printed() -> None:
    release = threading.Event()
    printed = threading.Event()

    @step(enable_cache=False, timeout=0.5)
    def hangs() -> int:
        print("before hanging")
        printed.set()
        release.wait(30)
        print("after release")
        return 1

    @pipeline(dynamic=True)
    def p():
        try:
            hangs()
        except StepFailedError:
            pass

    run = p()
    step_run = run.steps["hangs"]
    assert step_run.status.value == "failed" and step_run.error["type"] == "TimeoutError"
    assert step_run.logs_uri  # recorded at the timeout, not lost
    assert printed.wait(30)
    release.set()  # the abandoned thread finishes and adds the rest to the same log
    _wait_until(lambda: "after release" in Client().get_step_run(step_run.id).logs, "the abandoned step's log")
    assert Client().get_step_run(step_run.id).logs.splitlines() == ["before hanging", "after release"]


def _timed_out_inline_step() -> tuple[bool, str]:
    """One run of a step that prints, then hangs past its 1 s timeout: (printed in time, its log)."""
    release = threading.Event()
    printed_at: list[float] = []

    @step(enable_cache=False, timeout=1.0)
    def hangs() -> int:
        print("before hanging")
        printed_at.append(time.time())
        release.wait(30)
        return 1

    @pipeline(dynamic=True)
    def p():
        try:
            hangs()
        except StepFailedError:
            pass

    try:
        step_run = p().steps["hangs"]
        logs = step_run.logs
    finally:
        release.set()
    return bool(printed_at) and printed_at[0] < step_run.end_time.timestamp(), logs


def test_a_timed_out_step_has_its_output_so_far_in_the_log_at_once() -> None:
    """What the step printed before its timeout is in the log the moment the step is recorded failed.

    A timeout is a matter of time, so on a busy machine the step may not print before it: the
    pipeline runs again (a fresh step each time) until one attempt printed first.
    """
    for _ in range(10):
        printed_in_time, logs = _timed_out_inline_step()
        if printed_in_time:
            assert logs == "before hanging\n"  # while its thread still hangs
            return
    raise AssertionError("in 10 runs the step never printed before its 1 s timeout")


def _timed_out_isolated_step(marker: Path) -> tuple[bool, Any]:
    @step(enable_cache=False, timeout=1.0, runtime="isolated")
    def hangs_in_a_worker(marker_path: str) -> int:
        import pathlib
        import sys
        import time as _time

        print("before hanging")
        sys.stdout.flush()
        pathlib.Path(marker_path).touch()
        _time.sleep(60)
        return 1

    @pipeline(dynamic=True)
    def p():
        try:
            hangs_in_a_worker(str(marker))
        except StepFailedError:
            pass

    step_run = p().steps["hangs_in_a_worker"]
    assert step_run.error["type"] == "TimeoutError"
    assert step_run.logs_uri
    return marker.exists(), step_run


def test_an_isolated_step_that_timed_out_keeps_what_it_printed(tmp_path: Path) -> None:
    for attempt in range(10):  # until one worker printed before its timeout (a busy machine may delay it)
        printed_in_time, step_run = _timed_out_isolated_step(tmp_path / f"printed-{attempt}")
        if printed_in_time:
            assert "before hanging" in step_run.logs
            return
    raise AssertionError("in 10 runs the worker never printed before its 1 s timeout")
