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

Process mode: ``python -m unspool._worker zygote EVENT_FD`` starts a *zygote*, a small
single-threaded process that has imported unspool and nothing of the user's. For each
``run TOKEN DIR`` line on its stdin it forks a fresh worker that runs ``DIR/spec.pkl`` and
writes ``DIR/result.pkl``; it reports ``started TOKEN PID`` and ``exited TOKEN STATUS`` (the
raw wait status) on ``EVENT_FD``; a worker that wrote its result says ``finished TOKEN 0``
there first. ``kill TOKEN SIGNAL`` signals a worker. When its stdin
closes (the orchestrator ended, however it ended) it kills its workers and exits, and on
Linux each worker dies with the zygote. Forking from a clean zygote costs milliseconds
where starting an interpreter costs a tenth of a second, and never forks the threads,
locks and database connections of the orchestrator. ``python -m unspool._worker run DIR``
runs one attempt in a process of its own (platforms without ``fork``).
"""

from __future__ import annotations

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

SPEC_FILE = "spec.pkl"
RESULT_FILE = "result.pkl"


# -- packing ---------------------------------------------------------------------------------------

def dump_spec(spec: StepSpec) -> bytes:
    """The spec as bytes a worker can run (raises if something in it cannot be pickled)."""
    return pickle.dumps(
        {"spec": cloudpickle.dumps(spec), "sys_path": list(sys.path), "cwd": os.getcwd()},
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


def run_attempt(directory: str) -> None:
    """Run ``directory/spec.pkl``; write ``directory/result.pkl`` (atomically) when done."""
    with open(os.path.join(directory, SPEC_FILE), "rb") as f:
        blob = f.read()
    out = run_serialised(blob)
    tmp = os.path.join(directory, RESULT_FILE + ".tmp")
    with open(tmp, "wb") as f:
        f.write(out)
    os.replace(tmp, os.path.join(directory, RESULT_FILE))


# -- the zygote -------------------------------------------------------------------------------------

_libc: Any = None  # loaded once in the zygote (see _preload), not in every worker


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent (the zygote) dies."""
    if _libc is not None:
        try:
            _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:  # pragma: no cover - best effort
            pass


def _child(token: str, directory: str, event_fd: int, close_fds: tuple[int, ...]) -> None:
    """In a freshly forked worker: reset what the zygote set up, run, report, and exit.

    ``finished TOKEN 0`` on the event pipe says the result is written, so the orchestrator
    need not wait for this process to be torn down and reaped (``exited`` follows).
    """
    code = 0
    try:
        _die_with_parent()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in close_fds:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
            except Exception:
                pass
        run_attempt(directory)
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
    """Import in the zygote what every worker needs, so that no worker pays for it."""
    import tempfile


    with tempfile.TemporaryDirectory() as root:  # imports fsspec and the local filesystem
        artifact_store_for(root)
        _stores_forget(root)
    for value in (0, "", b"", [], {}):
        materializer_registry.for_type(type(value))
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


def zygote(event_fd: int) -> None:
    """Fork a worker per request until stdin closes (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the orchestrator and workers
    _preload()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    requests = sys.stdin.buffer.raw  # unbuffered: select() must see what is left to read
    pending = b""
    workers: dict[int, str] = {}  # pid -> token
    pids: dict[str, int] = {}  # token -> pid
    events = os.fdopen(event_fd, "wb", buffering=0)

    def send(line: str) -> None:
        events.write(line.encode() + b"\n")

    def reap() -> None:
        while workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            token = workers.pop(pid, None)
            if token is not None:
                pids.pop(token, None)
                send(f"exited {token} {status}")

    open_ = True
    while open_:
        try:
            readable, _, _ = select.select([requests, wake_r], [], [])
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            continue
        if wake_r in readable:
            os.read(wake_r, 4096)
            reap()
        if requests not in readable:
            continue
        data = os.read(requests.fileno(), 65536)
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            parts = raw.decode().split(" ", 2)
            if parts[0] == "run":
                token, directory = parts[1], parts[2]
                pid = os.fork()
                if pid == 0:
                    _child(token, directory, event_fd, (wake_r, wake_w))
                workers[pid] = token
                pids[token] = pid
                send(f"started {token} {pid}")
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
    for pid in list(workers):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while workers and time.monotonic() < deadline:
        reap()
        time.sleep(0.01)


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "zygote":
        zygote(int(argv[1]))
    elif len(argv) == 2 and argv[0] == "run":
        run_attempt(argv[1])
    else:
        sys.exit("usage: python -m unspool._worker zygote EVENT_FD | run DIR")


if __name__ == "__main__":
    main(sys.argv[1:])
