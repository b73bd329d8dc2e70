"""Isolated steps waiting in their executor's queue (for CPUs) are submitted but not started.

Guaranteed: a queued step whose run stops never starts, and is recorded as stopped
("not started"); a step's timeout counts from the moment it starts, so time spent queued
behind other steps never times it out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from unspool import Client, ExecutionMode, RunFailedError, StepFailedError, pipeline, step

pytestmark = pytest.mark.timeout(120)

ALL_CPUS = {"resources": {"cpu": os.cpu_count() or 1}}  # one such step at a time


def test_a_queued_step_of_a_stopped_run_never_starts(tmp_path: Path) -> None:
    release, started = tmp_path / "release", tmp_path / "queued-started"

    @step(runtime="isolated", enable_cache=False, settings=ALL_CPUS)
    def hold() -> None:
        while not release.exists():  # holds the only CPU until `boom` has failed
            time.sleep(0.01)

    @step(runtime="isolated", enable_cache=False, settings=ALL_CPUS)
    def queued() -> None:
        started.touch()

    @step(enable_cache=False)  # inline: runs while `queued` waits for the CPUs
    def boom() -> None:
        release.touch()
        raise RuntimeError("boom")

    @pipeline(dynamic=True, execution_mode=ExecutionMode.STOP_ON_FAILURE)
    def p() -> None:
        hold.submit()
        queued.submit()  # waits for the CPU `hold` holds
        try:
            boom()
        except StepFailedError:
            pass

    with pytest.raises(RunFailedError):
        p()
    run = Client().list_pipeline_runs()[0]
    assert run.steps["hold"].status.value == "completed"  # STOP_ON_FAILURE: running steps finish
    assert run.steps["queued"].status.value == "stopped"
    assert run.steps["queued"].error["message"].startswith("not started")
    assert not started.exists()


def test_the_timeout_counts_from_the_start_not_from_the_queue(tmp_path: Path) -> None:
    @step(runtime="isolated", enable_cache=False, settings=ALL_CPUS)
    def long() -> None:
        time.sleep(4)

    @step(runtime="isolated", enable_cache=False, settings=ALL_CPUS, timeout=3)
    def quick() -> int:
        return 1

    @pipeline(dynamic=True)
    def p() -> None:
        long.submit()
        quick.submit()  # queued about 4s behind `long`, then runs well within its 3s

    run = p()
    assert run.status.value == "completed"
    assert run.steps["quick"].status.value == "completed"
