"""Logs: each step run keeps its own stdout, stderr and ``logging`` output, even when many run at once."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest

from unspool import Client, ExecutionStatus, StepFailedError, pipeline, step


def test_stdout_stderr_and_logging_are_captured_per_step_run(home: Path) -> None:
    @step
    def chatty(n: int) -> int:
        print(f"stdout line {n}")
        print(f"stderr line {n}", file=sys.stderr)
        sys.stdout.write("partial ")
        sys.stdout.write("line\n")
        logging.getLogger("my.module").warning("careful %d", n)
        return n

    @step
    def quiet() -> None: ...

    @pipeline(dynamic=True)
    def talking() -> None:
        chatty(1)
        print("from the body, not a step")
        chatty(2)
        quiet()

    run = talking()

    assert run.steps["chatty"].logs.splitlines() == [
        "stdout line 1",
        "stderr line 1",
        "partial line",
        "WARNING my.module: careful 1",
    ]
    assert "stdout line 2" in run.steps["chatty_2"].logs
    assert "1" not in run.steps["chatty_2"].logs
    assert run.steps["quiet"].logs == ""
    assert all("from the body" not in s.logs for s in run.steps.values())
    # The log lives in the artifact store next to the step's outputs.
    logs_file = Path(run.steps["chatty"].logs_uri)
    assert logs_file.is_file() and logs_file.is_relative_to(home / "artifacts")
    assert logs_file.read_text() == run.steps["chatty"].logs


def test_a_failing_step_keeps_what_it_printed() -> None:
    @step
    def crash() -> None:
        print("about to fail")
        logging.getLogger("worker").error("giving up")
        raise RuntimeError("boom")

    @pipeline(dynamic=True)
    def crashing() -> None:
        try:
            crash()
        except StepFailedError:
            pass

    crashing()  # the body handled the failure
    [run] = Client().list_pipeline_runs()
    logs = run.steps["crash"].logs
    assert logs.splitlines() == ["about to fail", "ERROR worker: giving up"]
    assert run.steps["crash"].status == ExecutionStatus.FAILED


def test_concurrent_steps_never_see_each_others_lines() -> None:
    n_steps, n_lines = 16, 50
    barrier = threading.Barrier(n_steps, timeout=60)

    @step(enable_cache=False)
    def noisy(tag: int) -> int:
        barrier.wait()  # all 16 are running at once before anyone prints
        log = logging.getLogger(f"noisy.{tag}")
        for i in range(n_lines):
            if i % 3 == 0:
                print(f"step-{tag} line {i}")
            elif i % 3 == 1:
                print(f"step-{tag} line {i}", file=sys.stderr)
            else:
                log.warning(f"step-{tag} line {i}")
        return tag

    @pipeline(dynamic=True, max_parallelism=n_steps)
    def crowd() -> None:
        futures = [noisy.submit(t) for t in range(n_steps)]
        for f in futures:
            f.result()

    run = crowd()

    assert run.status == ExecutionStatus.COMPLETED
    for step_run in run.steps.values():
        tag = step_run.parameters["tag"]
        lines = step_run.logs.splitlines()
        assert len(lines) == n_lines, step_run.invocation_id
        assert all(f"step-{tag} line" in line for line in lines), step_run.invocation_id
        numbers = [int(line.rsplit(" ", 1)[1]) for line in lines]
        assert numbers == list(range(n_lines))


def test_captured_lines_are_echoed_to_the_console_with_the_invocation_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @step
    def speak(word: str) -> None:
        print(word)
        print(f"{word} on stderr", file=sys.stderr)

    @pipeline(dynamic=True)
    def echoed() -> None:
        speak("hello")
        speak.submit("world").wait()
        print("body line")

    echoed()

    out, err = capsys.readouterr()
    assert "[speak] hello\n" in out
    assert "[speak_2] world\n" in out
    assert "[speak] hello on stderr\n" in err
    assert "[speak_2] world on stderr\n" in err
    assert "body line\n" in out and "] body line" not in out


def test_concurrent_echo_keeps_whole_lines(capfd: pytest.CaptureFixture[str]) -> None:
    barrier = threading.Barrier(4, timeout=60)

    @step(enable_cache=False)
    def spam(tag: int) -> None:
        barrier.wait()
        for i in range(30):
            sys.stdout.write(f"t{tag}-")
            sys.stdout.write(f"{i}\n")

    @pipeline(dynamic=True)
    def spammy() -> None:
        for f in [spam.submit(t) for t in range(4)]:
            f.wait()

    spammy()

    out, _ = capfd.readouterr()
    echoed = [line for line in out.splitlines() if line.startswith("[spam")]
    assert len(echoed) == 4 * 30
    for line in echoed:
        prefix, text = line.split("] ", 1)
        invocation = prefix[1:]
        tag = int(text[1 : text.index("-")])
        assert invocation == ("spam" if tag == 0 else f"spam_{tag + 1}")


def test_logging_outside_steps_reaches_the_console_as_without_unspool(tmp_path: Path, home: Path) -> None:
    """Python's last-resort handler prints WARNING and above when nothing is configured; a
    body or script logging after a step ran must still be seen, and never in a step's log."""
    import os
    import subprocess
    import textwrap

    script = tmp_path / "logs_outside.py"
    script.write_text(textwrap.dedent("""
        import logging
        from unspool import pipeline, step

        @step
        def quiet_step() -> int:
            logging.getLogger("in.step").warning("inside the step")
            return 1

        @pipeline(dynamic=True)
        def body_logs() -> None:
            quiet_step()
            logging.getLogger("in.body").warning("from the body after a step")
            logging.getLogger("in.body").info("info is below the last resort's level")

        if __name__ == "__main__":
            body_logs()
            logging.getLogger("in.script").error("from the script after the run")
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "UNSPOOL_HOME": str(home), "UNSPOOL_PROGRESS": "off"})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "from the body after a step" in lines
    assert "from the script after the run" in lines
    assert not any("info is below" in line for line in lines)
    [run] = Client().list_pipeline_runs()
    assert run.steps["quiet_step"].logs == "WARNING in.step: inside the step\n"


def test_output_of_threads_a_step_starts_is_in_its_log() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def helper(i: int) -> int:
        print(f"helper {i} says hi")
        logging.getLogger("helper").warning("helper %d warns", i)
        return i

    @step(enable_cache=False)
    def spawns(n: int) -> int:
        t = threading.Thread(target=helper, args=(0,))
        t.start()
        t.join()
        with ThreadPoolExecutor(max_workers=2) as pool:
            return sum(pool.map(helper, range(1, n + 1)))

    @step(enable_cache=False)
    def neighbour() -> None:
        print("neighbour line")

    @pipeline(dynamic=True)
    def threaded() -> None:
        a = spawns.submit(2)
        b = neighbour.submit()
        a.wait()
        b.wait()

    run = threaded()
    lines = run.steps["spawns"].logs.splitlines()
    for i in range(3):
        assert f"helper {i} says hi" in lines
        assert f"WARNING helper: helper {i} warns" in lines
    assert len(lines) == 6
    assert run.steps["neighbour"].logs == "neighbour line\n"


def test_a_thread_that_outlives_its_step_writes_to_the_console_afterwards(capfd: pytest.CaptureFixture[str]) -> None:
    go, done = threading.Event(), threading.Event()

    def background() -> None:
        print("during the step")
        go.wait(30)
        print("after the step ended")
        done.set()

    @step(enable_cache=False)
    def leaves_a_thread() -> None:
        threading.Thread(target=background, daemon=True).start()

    @pipeline(dynamic=True)
    def p() -> None:
        leaves_a_thread()

    run = p()
    go.set()
    assert done.wait(30)
    assert "after the step ended" not in run.steps["leaves_a_thread"].logs
    assert "after the step ended" in capfd.readouterr().out
