"""Isolated steps on this machine: every attempt in a fresh worker process.

:class:`ProcessExecutor` meets the engine at the usual seam (``_executors.Executor``:
``submit(spec)`` returns a future of the step result). For each spec it

1. admits the step when the CPUs and memory it asks for (``settings={"resources": ...}``,
   see ``_resources.py``) fit what the running isolated steps leave of the machine; a step
   asking for more than the machine has runs alone. Admission is first come, first served.
2. writes the packed spec (``_worker.dump_spec``; each step packed once per run) to a file
   of the executor's private directory and has a worker process run it: a spare forked
   ahead by a zygote (POSIX, see ``_worker.py``) or one started as
   ``python -m unspool._worker run PREFIX`` (``start_method="spawn"``, or where there is no
   ``fork``).
3. when the worker exits, reads the result it wrote. No result means the worker died: the
   step fails with "worker process exited with signal 9 (SIGKILL) while running step 'x'"
   (or "with exit code 3"), and that line is appended to the step's log, which holds what
   the worker printed up to its death. The future is resolved from a new thread, so a slow
   callback (the engine continuing a chain of inline steps) never delays other exits.

``cancel(future, reason)`` drops a queued step (it never starts) or kills a running one's
worker; ``shutdown()`` does that to all and stops the zygote. A step with a ``timeout`` has
its worker killed when the timeout passes, counted from the worker's start, and ends with a
``TimeoutError``. The orchestrating process stays the only writer of the metadata store.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from ._artifact_io import artifact_store_for
from ._artifact_store import path_segment
from ._errors import UnspoolError, WorkerLostError
from ._resources import StepResources, machine_memory
from ._runner import (
    StepResult,
    StepSpec,
    describe_error,
    failed_result,
    not_started_result,
    resolve_soon,
    timed_out_result,
)
from ._worker import RESULT_SUFFIX, SPEC_SUFFIX, dump_spec, load_result

OnExit = Callable[[int | None], None]  # the worker's wait status; None: the zygote was lost


@dataclass
class _Job:
    spec: StepSpec
    future: Future[StepResult]
    cpu: float
    memory: int
    token: str = ""
    prefix: str = ""  # its files: PREFIX.spec, PREFIX.result
    started: float = 0.0
    stop_reason: str | None = None  # set when we kill it on purpose
    timer: threading.Timer | None = None
    timed_out: float | None = None  # the timeout that stopped it
    blob: bytes = b""


class ProcessExecutor:
    """Runs each step attempt in a fresh worker process (see the module docstring)."""

    name = "isolated"
    in_process = False

    def __init__(
        self,
        *,
        cpus: float | None = None,
        memory: int | None = None,
        start_method: str | None = None,
    ) -> None:
        self.cpus = float(cpus or os.cpu_count() or 1)
        self.memory = memory or machine_memory() or 0
        method = start_method or os.environ.get("UNSPOOL_ISOLATED_START") or "zygote"
        if method not in ("zygote", "spawn"):
            raise UnspoolError(f"isolated start method must be 'zygote' or 'spawn', got {method!r}")
        if method == "zygote" and not hasattr(os, "fork"):
            method = "spawn"
        self.start_method = method
        # spare workers the zygote forks ahead: enough for the steps that may start at once
        # when a wave of them is admitted, and never many idle processes
        self.spares = max(1, min(4, int(self.cpus)))
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._running: dict[str, _Job] = {}
        self._used_cpu = 0.0
        self._used_memory = 0
        self._tokens = itertools.count(1)
        # specs and results pass through files in memory (tmpfs) where there is such a place:
        # on a disk, creating and removing them cost a step a fraction of a millisecond more
        memory = _memory_dir()
        self._dir = tempfile.mkdtemp(prefix="unspool-workers-", dir=memory)
        self._in_memory = memory is not None
        self._disk_dir: str | None = None  # for a spec the memory one has no room for
        self._launcher: _Launcher | None = None
        self._closed = False
        self._packed_steps: dict[int, tuple[object, bytes]] = {}  # see dump_spec

    def __repr__(self) -> str:
        return (
            f"<ProcessExecutor {self.start_method} cpus={self.cpus:g} running={len(self._running)} "
            f"queued={len(self._queue)}>"
        )

    # -- the seam ------------------------------------------------------------------------------------
    def submit(self, spec: StepSpec) -> Future[StepResult]:
        future: Future[StepResult] = Future()
        try:
            wanted = StepResources.from_settings(spec.step.config.settings, step=spec.step.name)
        except UnspoolError as exc:
            resolve_soon(future, failed_result(exc))
            return future
        job = _Job(spec, future, cpu=min(wanted.cpu, self.cpus), memory=min(wanted.memory or 0, self.memory))
        try:
            job.blob = dump_spec(spec, self._packed_steps)
        except Exception as exc:
            error = describe_error(exc)
            error["message"] = (
                f"step {spec.invocation_id!r} could not be sent to a worker process: "
                f"{type(exc).__name__}: {exc}. Isolated steps, their parameters and hooks must "
                "be picklable with cloudpickle"
            )
            now = time.time()
            resolve_soon(future, StepResult(ok=False, error=error, exception=exc, start_time=now, end_time=now))
            return future
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                self._queue.append(job)
        if closed:
            resolve_soon(future, failed_result(UnspoolError("the run's process executor is shut down")))
            return future
        self._dispatch()
        return future

    def cancel(self, future: Future[StepResult], reason: str, running: bool = True) -> bool:
        """A queued step never starts (True); a running one's worker is killed if ``running``."""
        with self._lock:
            queued = next((job for job in self._queue if job.future is future), None)
            if queued is not None:
                self._queue.remove(queued)
            victim = None
            if queued is None and running:
                victim = next((job for job in self._running.values() if job.future is future), None)
                if victim is not None:
                    victim.stop_reason = reason
        if queued is not None:
            resolve_soon(future, not_started_result(queued.spec, reason))
            return True
        if victim is not None:
            self._kill(victim, signal.SIGKILL)
        return False

    def _cancel_all(self, reason: str) -> None:
        """Kill every running worker and drop queued steps (their futures still resolve)."""
        with self._lock:
            queued, self._queue = list(self._queue), deque()
            running = list(self._running.values())
            for job in running:
                job.stop_reason = reason
        for job in queued:
            resolve_soon(job.future, not_started_result(job.spec, reason))
        for job in running:
            self._kill(job, signal.SIGKILL)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        self._cancel_all("the run ended")
        deadline = time.monotonic() + 10
        while self._running and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._launcher is not None:
            self._launcher.close()
        for directory in (self._dir, self._disk_dir):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)

    # -- admission -------------------------------------------------------------------------------------
    def _fits(self, job: _Job) -> bool:
        if not self._running:
            return True
        return (
            self._used_cpu + job.cpu <= self.cpus + 1e-9
            and self._used_memory + job.memory <= self.memory
        )

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if not self._queue or not self._fits(self._queue[0]):
                    return
                job = self._queue.popleft()
                job.token = str(next(self._tokens))
                self._running[job.token] = job
                self._used_cpu += job.cpu
                self._used_memory += job.memory
            self._start(job)

    def _release(self, job: _Job) -> None:
        with self._lock:
            if self._running.pop(job.token, None) is None:
                return
            self._used_cpu -= job.cpu
            self._used_memory -= job.memory
            if not self._running:
                self._used_cpu, self._used_memory = 0.0, 0

    # -- one attempt -------------------------------------------------------------------------------------
    def _start(self, job: _Job) -> None:
        spec = job.spec
        name = f"{job.token}-{path_segment(spec.invocation_id)}"
        try:
            job.prefix = os.path.join(self._dir, name)
            try:
                _write(job.prefix + SPEC_SUFFIX, job.blob)
            except OSError:
                if not self._in_memory:
                    raise
                with self._lock:
                    if self._disk_dir is None:
                        self._disk_dir = tempfile.mkdtemp(prefix="unspool-workers-")
                job.prefix = os.path.join(self._disk_dir, name)
                _write(job.prefix + SPEC_SUFFIX, job.blob)
            job.blob = b""
        except Exception as exc:
            self._exited(job, None, launch_error=exc)
            return
        job.started = time.time()
        timeout = spec.step.config.timeout
        if timeout is not None:
            job.timer = threading.Timer(timeout, self._timed_out, (job, timeout))
            job.timer.daemon = True
            job.timer.start()
        try:
            self._launcher_for().launch(job.token, job.prefix, lambda status: self._exited(job, status))
        except Exception as exc:
            self._exited(job, None, launch_error=exc)

    def _launcher_for(self) -> _Launcher:
        with self._lock:
            old = self._launcher
            if old is not None and old.lost:  # the zygote died: later steps get a new one
                self._launcher = None
            if self._launcher is None:
                self._launcher = (
                    _ZygoteLauncher(self.spares) if self.start_method == "zygote" else _SpawnLauncher()
                )
            launcher = self._launcher
        if old is not None and old is not launcher:
            old.close()
        return launcher

    def _timed_out(self, job: _Job, timeout: float) -> None:
        job.stop_reason = f"killed after its timeout of {timeout}s"
        job.timed_out = timeout
        self._kill(job, signal.SIGKILL)

    def _kill(self, job: _Job, signum: int) -> None:
        launcher = self._launcher
        if launcher is not None and job.token in self._running:
            launcher.kill(job.token, signum)

    def _exited(self, job: _Job, status: int | None, launch_error: BaseException | None = None) -> None:
        if job.timer is not None:
            job.timer.cancel()
        result: StepResult | None = None
        try:
            with open(job.prefix + RESULT_SUFFIX, "rb") as f:
                blob = f.read()
        except OSError:
            pass  # none written
        else:
            try:
                result = load_result(blob)
            except Exception as exc:
                result = failed_result(exc, f"the result of step {job.spec.invocation_id!r} could not be read: ")
        if result is None:
            result = self._lost(job, status, launch_error)
        for suffix in (SPEC_SUFFIX, RESULT_SUFFIX):
            try:
                os.unlink(job.prefix + suffix)
            except OSError:
                pass
        self._release(job)
        resolve_soon(job.future, result)
        self._dispatch()

    def _lost(self, job: _Job, status: int | None, launch_error: BaseException | None) -> StepResult:
        """The result of a worker that ended without writing one."""
        spec = job.spec
        if launch_error is not None:
            how = f"could not be started ({type(launch_error).__name__}: {launch_error})"
        elif status is None:
            how = "was lost: the zygote process that forks workers died"
        else:
            how = "exited " + describe_exit(status, hint=job.stop_reason is None)
        message = f"worker process {how} while running step {spec.invocation_id!r}"
        if job.stop_reason:
            message += f" ({job.stop_reason})"
        if job.timed_out is not None:
            result = timed_out_result(spec, job.timed_out, "its worker was stopped", job.started)
        else:
            result = failed_result(WorkerLostError(message), start_time=job.started)
        result.error["exit_status"] = None if status is None else _exit_code(status)  # type: ignore[index]
        try:
            store = artifact_store_for(spec.artifact_store_url)
            store.append_text(spec.logs_uri, f"--- {message} ---\n")
            result.logs_uri = spec.logs_uri
        except Exception:  # pragma: no cover - the failure is recorded either way
            pass
        return result


# -- launchers ----------------------------------------------------------------------------------------

class _Launcher:
    lost = False  # True once it can launch nothing more

    def launch(self, token: str, prefix: str, on_exit: OnExit) -> None: ...

    def kill(self, token: str, signum: int) -> None: ...

    def close(self) -> None: ...


def _worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "unspool._worker", *args]


class _ZygoteLauncher(_Launcher):
    """Talks to one zygote process that forks the workers (see ``_worker.py``)."""

    def __init__(self, spares: int) -> None:
        events_r, events_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                _worker_command("zygote", str(events_w), str(spares)),
                stdin=subprocess.PIPE,
                pass_fds=(events_w,),
                close_fds=True,
            )
        finally:
            os.close(events_w)
        self._events = os.fdopen(events_r, "rb", buffering=0)
        self._lock = threading.Lock()  # guards the dicts; never held across I/O
        self._send_lock = threading.Lock()
        self._waiting: dict[str, OnExit] = {}
        self._pids: dict[str, int] = {}
        self.lost = False
        self._reader = threading.Thread(target=self._read, name="unspool-zygote-events", daemon=True)
        self._reader.start()

    def launch(self, token: str, prefix: str, on_exit: OnExit) -> None:
        with self._lock:
            if self.lost:
                raise WorkerLostError("the zygote process that forks isolated workers is gone")
            self._waiting[token] = on_exit
        try:
            self._send(f"run {token} {prefix}")
        except WorkerLostError:
            with self._lock:
                if self._waiting.pop(token, None) is None:
                    return  # the reader already reported it lost
            raise

    def kill(self, token: str, signum: int) -> None:
        with self._lock:
            alive = token in self._waiting and not self.lost
        if alive:
            try:
                self._send(f"kill {token} {int(signum)}")
            except WorkerLostError:
                pass  # the reader reports the loss

    def _send(self, line: str) -> None:
        assert self._proc.stdin is not None
        with self._send_lock:
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                raise WorkerLostError(f"the zygote process that forks isolated workers is gone ({exc})") from None

    def _read(self) -> None:
        buffered = b""
        while True:
            try:
                chunk = self._events.read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for raw in lines:
                kind, token, value = raw.decode().split(" ")
                if kind == "started":
                    self._pids[token] = int(value)
                elif kind in ("finished", "exited"):  # finished: the result is written
                    with self._lock:
                        on_exit = self._waiting.pop(token, None)
                        self._pids.pop(token, None)
                    if on_exit is not None:
                        on_exit(int(value))
        with self._lock:  # the zygote is gone: nobody will report the rest
            self.lost = True
            orphans, self._waiting = list(self._waiting.values()), {}
        for on_exit in orphans:
            on_exit(None)

    def close(self) -> None:
        with self._lock:
            self.lost = True
        with self._send_lock:
            try:
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=10)
        self._events.close()


class _SpawnLauncher(_Launcher):
    """One ``python -m unspool._worker run DIR`` process per attempt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def launch(self, token: str, prefix: str, on_exit: OnExit) -> None:
        proc = subprocess.Popen(_worker_command("run", prefix), stdin=subprocess.DEVNULL)
        with self._lock:
            self._procs[token] = proc

        def wait() -> None:
            proc.wait()
            with self._lock:
                self._procs.pop(token, None)
            # Popen gives -N for signal N; turn it back into a wait status
            code = proc.returncode
            on_exit((-code) & 0x7F if code < 0 else (code & 0xFF) << 8)

        threading.Thread(target=wait, name=f"unspool-worker-{token}", daemon=True).start()

    def kill(self, token: str, signum: int) -> None:
        with self._lock:
            proc = self._procs.get(token)
        if proc is not None:
            try:
                proc.send_signal(signum)
            except ProcessLookupError:  # pragma: no cover
                pass


# -- small helpers -------------------------------------------------------------------------------------

def _memory_dir() -> str | None:
    """A directory in memory (tmpfs) to write to, or None (then the default temp directory)."""
    directory = "/dev/shm"
    return directory if os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK) else None


def _write(path: str, blob: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(blob)
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def _exit_code(status: int) -> int:
    """The exit code, or ``-N`` for signal N."""
    return os.waitstatus_to_exitcode(status)


def describe_exit(status: int, hint: bool = True) -> str:
    """'with signal 9 (SIGKILL)' or 'with exit code 3', from a wait status.

    >>> describe_exit(9), describe_exit(3 << 8)
    ('with signal 9 (SIGKILL)', 'with exit code 3')
    """
    code = _exit_code(status)
    if code >= 0:
        return f"with exit code {code}" + (" without reporting a result" if code == 0 else "")
    signum = -code
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "unknown signal"
    why = {
        signal.SIGKILL: ": killed by the system (out of memory?) or by another process",
        signal.SIGSEGV: ": the step crashed",
    }.get(signum, "") if hint else ""  # type: ignore[call-overload]
    return f"with signal {signum} ({name}{why})"
