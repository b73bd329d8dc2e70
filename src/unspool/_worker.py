"""The far side of the executor seam: a serialised step spec in, a serialised step result out.

Isolated steps (``runtime="isolated"``) and Ray tasks run here, away from the orchestrating
process. Everything crosses as bytes:

* :func:`dump_spec` packs a :class:`StepSpec` with cloudpickle (functions of importable
  modules by reference; ``__main__`` functions, closures and lambdas by value) together with
  the orchestrator's ``sys.path`` and working directory, so the worker imports what it did.
* :func:`run_serialised` unpacks it, runs the step with :func:`run_step` and packs the
  :class:`StepResult`. The error travels as a dict; the exception object is pickled too,
  but only as a courtesy: :func:`load_result` drops it when it does not unpickle.
* Captured output is appended to the step's log file as it is written (:class:`LogStream`),
  and ``faulthandler`` writes there too, so a worker that dies keeps its log up to its end.

The worker reads inputs from and writes outputs and logs to the artifact store; it never
opens the metadata store (the spec does not even name it).

Process mode: ``python -m unspool._worker zygote EVENT_FD [SPARES]`` starts a *zygote*, a
small single-threaded process that has imported unspool and nothing of the user's. It keeps
SPARES (default 2) *spare* workers forked ahead of demand: fresh processes, set up and
waiting for one attempt each. For each ``run TOKEN PREFIX`` line on its stdin it hands the
attempt to a spare (forking one on the spot if none is left) and forks a replacement once
no request waits; the worker runs ``PREFIX.spec``, writes ``PREFIX.result`` and exits,
so no process ever runs two attempts. The zygote reports ``started TOKEN PID`` and
``exited TOKEN STATUS`` (the raw wait status) on ``EVENT_FD``; a worker that wrote its
result says ``finished TOKEN 0`` there first. ``kill TOKEN SIGNAL`` signals a worker. When
its stdin closes (the orchestrator ended, however it ended) it kills its workers and exits,
and on Linux each worker dies with the zygote. Forking from a clean zygote costs
milliseconds where starting an interpreter costs a tenth of a second, and never forks the
threads, locks and database connections of the orchestrator; forking ahead takes even that
off a step's path. ``python -m unspool._worker run PREFIX`` runs one attempt in a process of
its own (platforms without ``fork``).
"""

from __future__ import annotations

import dataclasses
import faulthandler
import os
import pickle
import select
import signal
import sys
import time
from typing import Any

import cloudpickle

from ._artifact_io import artifact_store_for, forget_artifact_store
from ._materializers import materializer_registry
from ._runner import StepResult, StepSpec, attempt_header, describe_error, run_step

SPEC_SUFFIX = ".spec"  # an attempt's files: PREFIX.spec in, PREFIX.result out
RESULT_SUFFIX = ".result"


# -- packing ---------------------------------------------------------------------------------------

def dump_spec(spec: StepSpec, packed_steps: dict[int, tuple[Any, bytes]] | None = None) -> bytes:
    """The spec as bytes a worker can run (raises if something in it cannot be pickled).

    ``packed_steps`` (an executor's, for one run) keeps each step packed once: the 1,000
    specs of a ``.map`` share one step, whose function cloudpickle would otherwise pack by
    value 1,000 times. A step's function is thus packed as it was when the run first sent it.
    """
    step_blob = None
    if packed_steps is not None:
        packed = packed_steps.get(id(spec.step))
        if packed is None or packed[0] is not spec.step:
            packed = packed_steps[id(spec.step)] = (spec.step, cloudpickle.dumps(spec.step))
        step_blob = packed[1]
        spec = dataclasses.replace(spec, step=None)  # type: ignore[arg-type]
    return pickle.dumps(
        {"spec": cloudpickle.dumps(spec), "step": step_blob, "sys_path": list(sys.path), "cwd": os.getcwd()},
        protocol=pickle.HIGHEST_PROTOCOL,
    )


def load_result(blob: bytes) -> StepResult:
    """The result a worker packed; the exception object only when it unpickles here."""
    wire = pickle.loads(blob)
    result: StepResult = wire["result"]
    if wire.get("exception") is not None:
        try:
            result.exception = pickle.loads(wire["exception"])
        except Exception:
            result.exception = None
    return result


def _dump_result(result: StepResult) -> bytes:
    exception, result.exception = result.exception, None
    exc_blob = None
    if exception is not None:
        try:
            exc_blob = cloudpickle.dumps(exception)
            pickle.loads(exc_blob)  # some exceptions pickle but do not unpickle
        except Exception:
            exc_blob = None
    try:
        return pickle.dumps({"result": result, "exception": exc_blob}, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        failed = StepResult(
            ok=False,
            error=describe_error(
                TypeError(f"the step's result could not be sent back from the worker: {exc!r}")
            ),
            logs_uri=result.logs_uri,
            start_time=result.start_time,
            end_time=result.end_time,
        )
        return pickle.dumps({"result": failed, "exception": None}, protocol=pickle.HIGHEST_PROTOCOL)


# -- running ----------------------------------------------------------------------------------------

class LogStream:
    """Appends a step's captured output to its log file as it is written.

    On a local artifact store every write is flushed at once. On a remote one (which cannot
    append) text is collected and written at most every ``interval`` seconds.
    """

    def __init__(self, spec: StepSpec, interval: float = 2.0) -> None:
        self.store = artifact_store_for(spec.artifact_store_url)
        self.uri = spec.logs_uri
        self.header = attempt_header(spec)
        self.interval = interval
        self.file: Any = None
        self._buffer: list[str] = []
        self._last = time.monotonic()
        if self.store.is_local:
            self.file = self.store.open(self.uri, "a")

    def write(self, text: str) -> None:
        try:
            if self.header:
                text, self.header = self.header + text, ""
            if self.file is not None:
                self.file.write(text)
                self.file.flush()
                return
            self._buffer.append(text)
            if time.monotonic() - self._last >= self.interval:
                self.flush()
        except Exception:  # pragma: no cover - losing a log line must not fail the step
            pass

    def flush(self) -> None:
        if self._buffer:
            text, self._buffer = "".join(self._buffer), []
            self.store.append_text(self.uri, text)
        self._last = time.monotonic()

    def close(self) -> None:
        if self.file is not None:
            empty = self.file.tell() == 0
            self.file.close()
            self.file = None
            if empty:
                self.store.remove(self.uri)
        else:
            self.flush()


def run_serialised(blob: bytes, *, exact_path: bool = True) -> bytes:
    """Run a spec packed by :func:`dump_spec`; returns the packed result, never raises.

    ``exact_path``: adopt the orchestrator's ``sys.path`` and working directory (a local
    worker process); otherwise only add the ``sys.path`` entries that exist here (Ray).
    """
    start = time.time()
    spec: StepSpec | None = None
    try:
        envelope = pickle.loads(blob)
        if exact_path:
            sys.path[:] = envelope["sys_path"]
            try:
                os.chdir(envelope["cwd"])
            except OSError:
                pass
        else:
            sys.path.extend(p for p in envelope["sys_path"] if p not in sys.path and os.path.isdir(p))
        spec = pickle.loads(envelope["spec"])
        if envelope.get("step") is not None:
            spec.step = pickle.loads(envelope["step"])
    except BaseException as exc:
        error = describe_error(exc)
        error["message"] = (
            f"the worker could not load the step: {type(exc).__name__}: {exc}. Steps, their "
            "parameters and hooks must be picklable with cloudpickle, and modules they use "
            "importable in the worker"
        )
        return _dump_result(StepResult(ok=False, error=error, start_time=start, end_time=time.time()))
    stream = LogStream(spec)
    if stream.file is not None:
        faulthandler.enable(file=stream.file, all_threads=True)
    try:
        result = run_step(spec, log_sink=stream.write)
    except BaseException as exc:  # pragma: no cover - run_step reports step errors itself
        result = StepResult(ok=False, error=describe_error(exc), start_time=start, end_time=time.time())
    finally:
        if stream.file is not None:
            faulthandler.disable()
        stream.close()
    return _dump_result(result)


def run_attempt(prefix: str) -> None:
    """Run ``PREFIX.spec``; write ``PREFIX.result`` (atomically) when done."""
    with open(prefix + SPEC_SUFFIX, "rb") as f:
        blob = f.read()
    out = run_serialised(blob)
    tmp = prefix + RESULT_SUFFIX + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out)
    os.replace(tmp, prefix + RESULT_SUFFIX)


# -- the zygote -------------------------------------------------------------------------------------

_libc: Any = None  # loaded once in the zygote (see _preload), not in every worker


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent (the zygote) dies."""
    if _libc is not None:
        try:
            _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:  # pragma: no cover - best effort
            pass


def _spare(job_fd: int, event_fd: int, close_fds: list[int]) -> None:
    """In a freshly forked spare worker: set up, wait for one attempt, run it, report, exit.

    The set-up (dying with the zygote, signal handlers, closing the zygote's descriptors)
    happens before any attempt is handed over, off the step's path. The attempt arrives as
    ``TOKEN PREFIX`` on ``job_fd``; end of file there (the zygote closing down) means none
    will. ``finished TOKEN 0`` on the event pipe says the result is written, so the
    orchestrator need not wait for this process to be torn down and reaped (``exited``
    follows).
    """
    code = 0
    try:
        _die_with_parent()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # SIGINT stays ignored while idle
        for fd in close_fds:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        request = b""
        while not request.endswith(b"\n"):
            chunk = os.read(job_fd, 65536)
            if not chunk:
                os._exit(0)  # the zygote is closing: no attempt for this spare
            request += chunk
        os.close(job_fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops the step
        token, prefix = request.decode().rstrip("\n").split(" ", 1)
        run_attempt(prefix)
        os.write(event_fd, f"finished {token} 0\n".encode())
    except BaseException:  # pragma: no cover - reported by the missing result file
        import traceback

        traceback.print_exc()
        code = 70
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _preload() -> None:
    """Import and set up in the zygote what every worker needs, so that no worker pays for it."""
    import concurrent.futures.thread  # noqa: F401 - the step log capture (_logs) patches its pool
    import tempfile

    from . import _logs

    with tempfile.TemporaryDirectory() as root:  # imports fsspec and the local filesystem
        artifact_store_for(root)
        _stores_forget(root)
    for value in (0, "", b"", [], {}):
        materializer_registry.for_type(type(value))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except Exception:
            pass
    _logs.install()  # what run_step would do first in every worker
    if sys.platform.startswith("linux"):
        global _libc
        try:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        except Exception:  # pragma: no cover - workers then just do not die with the zygote
            _libc = None
    import gc

    gc.collect()
    gc.freeze()  # workers' collections never touch (and so never copy) the zygote's objects


def _stores_forget(root: str) -> None:
    forget_artifact_store(root)


def zygote(event_fd: int, spares: int = 2) -> None:
    """Hand each request to a spare worker until stdin closes (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the orchestrator and workers
    _preload()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    requests = sys.stdin.buffer.raw  # unbuffered: select() must see what is left to read
    pending = b""
    workers: dict[int, str] = {}  # pid -> token, running an attempt
    pids: dict[str, int] = {}  # token -> pid
    idle: dict[int, int] = {}  # pid -> the write end of its job pipe, waiting for an attempt
    events = os.fdopen(event_fd, "wb", buffering=0)

    def send(line: str) -> None:
        events.write(line.encode() + b"\n")

    def fork_spare() -> None:
        job_r, job_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(job_w)
            _spare(job_r, event_fd, [wake_r, wake_w, *idle.values()])
        os.close(job_r)
        idle[pid] = job_w

    def hand_over(token: str, prefix: str) -> None:
        line = f"{token} {prefix}\n".encode()
        while True:
            if not idle:
                fork_spare()
            pid = next(iter(idle))
            job_w = idle.pop(pid)
            try:
                os.write(job_w, line)
            except OSError:  # it died while idle; reaped below
                continue
            finally:
                os.close(job_w)
            workers[pid] = token
            pids[token] = pid
            send(f"started {token} {pid}")
            return

    def reap() -> None:
        while workers or idle:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job_w = idle.pop(pid, -1)
            if job_w >= 0:
                os.close(job_w)
            token = workers.pop(pid, None)
            if token is not None:
                pids.pop(token, None)
                send(f"exited {token} {status}")

    open_ = True
    while open_:
        wanted = len(idle) < spares  # replenish only while no request waits
        try:
            readable, _, _ = select.select([requests, wake_r], [], [], 0 if wanted else None)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            continue
        if wake_r in readable:
            os.read(wake_r, 4096)
            reap()
        if requests not in readable:
            if wanted and not readable:
                fork_spare()
            continue
        data = os.read(requests.fileno(), 65536)
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            parts = raw.decode().split(" ", 2)
            if parts[0] == "run":
                hand_over(parts[1], parts[2])
            elif parts[0] == "kill":
                pid = pids.get(parts[1])
                if pid is not None:
                    try:
                        os.kill(pid, int(parts[2]))
                    except ProcessLookupError:
                        pass
            elif parts[0] == "exit":
                open_ = False
        reap()
    for pid, job_w in idle.items():
        os.close(job_w)  # spares read end of file and exit
        idle[pid] = -1
    for pid in list(workers):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while (workers or idle) and time.monotonic() < deadline:
        reap()
        time.sleep(0.01)


def main(argv: list[str]) -> None:
    if len(argv) in (2, 3) and argv[0] == "zygote":
        zygote(int(argv[1]), *(int(n) for n in argv[2:]))
    elif len(argv) == 2 and argv[0] == "run":
        run_attempt(argv[1])
    else:
        sys.exit("usage: python -m unspool._worker zygote EVENT_FD [SPARES] | run PREFIX")


if __name__ == "__main__":
    main(sys.argv[1:])
