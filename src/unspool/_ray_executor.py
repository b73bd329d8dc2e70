"""Steps as Ray tasks: ``orchestrator: {type: ray, address: ..., all_steps: false}``.

The pipeline body, the scheduler and every metadata write stay in the driver (the
orchestrating process); Ray only moves packed step specs out and packed step results back
(``_worker.dump_spec``/``run_serialised``), and each task reads its inputs from and writes
its outputs and log to the artifact store, which every Ray node must therefore reach.

* Which steps: ``runtime="isolated"`` steps always; the others too with ``all_steps: true``.
* Where: ``address`` omitted starts a local Ray instance (``num_cpus``, default this
  machine's CPUs; no dashboard; listening on 127.0.0.1 only) that lives as long as the
  process, so later runs reuse it;
  ``auto`` or ``ray://host:port`` joins a cluster. If Ray is already initialised in this
  process it is used as it is.
* Resources: ``settings={"resources": {...}}`` (``_resources.py``) become the task's
  ``num_cpus``, ``num_gpus``, ``memory`` and custom ``resources``. A step asking for more
  than the whole cluster has fails at once with a clear error instead of waiting forever.
* Batches: each kind of task (its options) has at most twice as many tasks in Ray as the
  cluster runs at once. Specs submitted beyond that wait in the driver and leave as tasks
  end, several per task (at most ``MAX_BATCH``), run one after the other: a Ray task costs
  milliseconds of scheduling, a small step less. Each spec keeps its own log,
  result and retries; a step with a ``timeout`` always has a task of its own.
* Failures: Ray never retries a task (``max_retries=0``). A worker that dies fails only the
  steps it held, and unspool applies the step's ``retry`` like anywhere else.
  ``cancel(future, reason)`` drops a step not sent yet (it never starts); otherwise it
  force-cancels the step's task (FAIL_FAST), failing the other steps it carried too.
* Timeouts: a step with a ``timeout`` is cancelled when it passes and ends with a
  ``TimeoutError``, counted from the moment its task starts. Ray does not report that, so
  the task tells a small actor (:class:`StartBoard`, no CPU, made on a run's first such
  step), which passes it on to the driver; should the actor be lost, the clock counts
  from submission.

Only this module imports ``ray``; install it with ``pip install 'unspool[ray]'``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ._artifact_io import artifact_store_for
from ._errors import UnspoolError, WorkerLostError
from ._resources import StepResources
from ._runner import (
    StepResult,
    StepSpec,
    failed_result,
    not_started_result,
    resolve,
    resolve_soon,
    timed_out_result,
)
from ._worker import dump_spec, load_result, run_serialised


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UnspoolError(
            "orchestrator type 'ray' needs Ray, which is not installed; install it with "
            "pip install 'unspool[ray]'"
        ) from exc
    return ray


def _start_loopback_instance(ray: Any, num_cpus: int) -> None:
    """Start a local Ray instance whose servers (GCS, raylet, workers, agents) listen on
    127.0.0.1 only, never on every interface.

    Ray binds its gRPC servers to loopback only when the node address is 127.0.0.1, but on
    Linux ``ray.init`` swaps 127.0.0.1 for the host's outward address unless Ray runs in
    its single-machine mode (the default on macOS and Windows, selected with
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``): that mode is switched on for this start.
    """
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - a Ray without that module
        ray_constants = None
    single_machine = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if single_machine is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    finally:
        if single_machine is not None:
            ray_constants.ENABLE_RAY_CLUSTER = single_machine
    address = ray.util.get_node_ip_address()
    if not address.startswith("127.") and address != "::1":
        ray.shutdown()
        raise UnspoolError(
            f"the local Ray instance would listen on {address}, not on loopback only; start Ray "
            "yourself (ray start --head --node-ip-address=127.0.0.1) and set the orchestrator's "
            "address to it"
        )


def run_remote(blobs: list[bytes], start_signal: tuple[Any, str] | None = None) -> list[bytes]:
    """The Ray task: run packed specs one after the other on a Ray worker, return their
    packed results. ``start_signal`` (a :class:`StartBoard` and a token) is told first."""
    if start_signal is not None:
        board, token = start_signal
        board.started.remote(token)
    return [run_serialised(blob, exact_path=False) for blob in blobs]


class StartBoard:
    """A Ray actor (async, no CPU) where a task carrying a step with a timeout says that it
    started: ``wait(token)`` returns once ``started(token)`` was called, so the driver
    starts the step's clock then, not when it submitted the task."""

    def __init__(self) -> None:
        self._events: dict[str, Any] = {}

    def _event(self, token: str) -> Any:
        import asyncio

        return self._events.setdefault(token, asyncio.Event())

    async def started(self, token: str) -> None:
        self._event(token).set()

    async def wait(self, token: str) -> None:
        await self._event(token).wait()
        self._events.pop(token, None)


MAX_BATCH = 16  # specs one Ray task may carry


@dataclass(eq=False)
class _Item:
    """One submitted spec: waiting to be sent, then part of one Ray task."""

    spec: StepSpec
    future: Future[StepResult]
    blob: bytes
    options: dict[str, Any]
    key: str  # the options, as text: specs with the same key may share a task
    cpu: float
    ref: Any = None  # its Ray task, once sent
    start: float = 0.0
    timer: threading.Timer | None = None
    stop_reason: str | None = None
    dropped: bool = False  # cancelled before it was sent
    signal: tuple[Any, str] | None = None  # with a timeout: where its task says it started
    ended: bool = False  # its task ended


class RayExecutor:
    """Runs step specs as Ray tasks (see the module docstring)."""

    name = "ray"
    in_process = False

    def __init__(self, orchestrator: dict[str, Any]) -> None:
        ray = self.ray = _ray()
        if not ray.is_initialized():
            address = orchestrator.get("address")
            if address:
                ray.init(address=address, log_to_driver=True)
            else:
                _start_loopback_instance(ray, orchestrator.get("num_cpus") or os.cpu_count() or 1)
        self._task = ray.remote(max_retries=0)(run_remote)
        self._remotes: dict[str, Any] = {}  # options -> the task with them
        self._lock = threading.Lock()
        self._queue: list[_Item] = []  # submitted, not sent to Ray yet
        self._items: dict[Future[StepResult], _Item] = {}  # until its task ends
        self._tasks: dict[Any, list[_Item]] = {}  # ref -> the specs it carries
        self._in_ray: Counter[str] = Counter()  # tasks in Ray, by key
        self._closed = False
        self._totals: dict[str, float] | None = None
        self._packed_steps: dict[int, tuple[object, bytes]] = {}  # see dump_spec
        self._board: Any = None  # see StartBoard

    def __repr__(self) -> str:
        return f"<RayExecutor tasks={len(self._tasks)} queued={len(self._queue)}>"

    # -- the seam -------------------------------------------------------------------------------------
    def submit(self, spec: StepSpec) -> Future[StepResult]:
        future: Future[StepResult] = Future()
        try:
            wanted = StepResources.from_settings(spec.step.config.settings, step=spec.step.name)
            options = self._options(spec, wanted)
            blob = dump_spec(spec, self._packed_steps)
        except Exception as exc:
            resolve_soon(future, failed_result(exc))
            return future
        item = _Item(spec, future, blob, options, repr(sorted(options.items())), wanted.cpu)
        with self._lock:
            closed = self._closed
            if not closed:
                self._queue.append(item)
                self._items[future] = item
        if closed:
            resolve_soon(future, failed_result(UnspoolError("the run's Ray executor is shut down")))
        else:
            self._pump()
        return future

    def cancel(self, future: Future[StepResult], reason: str, running: bool = True) -> bool:
        """A step not sent to Ray yet never starts (True). Otherwise Ray does not tell a queued
        task from a running one: ``running`` force-cancels the step's task (and so the other
        steps it carries), else it is left alone; returns False (it may have started)."""
        with self._lock:
            item = self._items.get(future)
            queued = item is not None and item.ref is None
            if queued:
                item.dropped = True  # type: ignore[union-attr]
                if item in self._queue:
                    self._queue.remove(item)  # type: ignore[arg-type]
                del self._items[future]
        if item is None:
            return False
        if queued:
            resolve_soon(future, not_started_result(item.spec, reason))
            return True
        if running:
            self._cancel(item.ref, reason, item)
        return False

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            queued = [item for item in self._items.values() if item.ref is None]
            for item in queued:
                item.dropped = True
                del self._items[item.future]
            self._queue = []
            refs = list(self._tasks)
        for item in queued:
            resolve_soon(item.future, not_started_result(item.spec, "the run ended"))
        for ref in refs:
            self._cancel(ref, "the run ended")
        if self._board is not None:
            try:
                self.ray.kill(self._board)
            except Exception:  # pragma: no cover - already gone
                pass

    # -- sending ----------------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Send what may go to Ray now. Each kind of task (its options) has at most twice as
        many tasks in Ray as the cluster runs at once; what is submitted beyond that waits
        here and leaves in batches as tasks end, several specs per task (a Ray task costs
        milliseconds of scheduling, a small step less)."""
        with self._lock:
            batches = [] if self._closed else self._take()
        for batch in batches:
            try:
                self._send(batch)
            except Exception as exc:  # pragma: no cover - Ray refused the task
                with self._lock:
                    self._in_ray[batch[0].key] -= 1
                    for item in batch:
                        self._items.pop(item.future, None)
                for item in batch:
                    resolve_soon(item.future, failed_result(exc, "the Ray task could not be submitted: "))

    def _take(self) -> list[list[_Item]]:
        """Batches to send now, taken off the queue (called with the lock held). A spec with a
        ``timeout`` always gets a task of its own: its clock and its cancel are its own."""
        groups: dict[str, list[_Item]] = {}
        for item in self._queue:
            groups.setdefault(item.key, []).append(item)
        batches: list[list[_Item]] = []
        cpus = (self._totals or {}).get("CPU", 1.0)
        for key, group in groups.items():
            cpu = group[0].cpu
            limit = 2 * max(1, int(cpus / cpu)) if cpu > 0 else len(group)
            free = limit - self._in_ray[key]
            if free <= 0:
                continue
            alone = [[item] for item in group if item.spec.step.config.timeout is not None][:free]
            shared = [item for item in group if item.spec.step.config.timeout is None]
            # spread what waits over all the tasks this kind may have, not over the free ones:
            # a task carrying all of it would leave the other workers idle
            size = min(MAX_BATCH, -(-len(shared) // limit))
            for n in range(min(free - len(alone), -(-len(shared) // size) if shared else 0)):
                alone.append(shared[n * size:(n + 1) * size])
            batches.extend(alone)
            self._in_ray[key] += len(alone)
        taken = {id(item) for batch in batches for item in batch}
        self._queue = [item for item in self._queue if id(item) not in taken]
        return batches

    def _send(self, batch: list[_Item]) -> None:
        key = batch[0].key
        remote = self._remotes.get(key)
        if remote is None:
            remote = self._remotes[key] = self._task.options(**batch[0].options)
        timeout = batch[0].spec.step.config.timeout  # a step with a timeout is alone
        with self._lock:  # held while sending: a cancel sees a spec either sent or not
            batch = [item for item in batch if not item.dropped]
            if not batch:
                self._in_ray[key] -= 1
                return
            signal = None
            if timeout is not None:
                signal = batch[0].signal = (self._start_board(), f"{id(batch[0]):x}-{time.monotonic_ns()}")
            ref = remote.remote([item.blob for item in batch], signal)
            self._tasks[ref] = batch
            start = time.time()
            for item in batch:
                item.ref, item.start, item.blob = ref, start, b""
        if timeout is not None:
            item, (board, token) = batch[0], signal  # type: ignore[misc]
            board.wait.remote(token).future().add_done_callback(lambda fut: self._started(item, timeout, fut))

        def on_done(fut: Any) -> None:  # in Ray's callback thread: hand over at once
            threading.Thread(target=self._finished, args=(ref, fut), name="unspool-ray-done", daemon=True).start()

        ref.future().add_done_callback(on_done)

    # -- helpers ---------------------------------------------------------------------------------------
    def _options(self, spec: StepSpec, wanted: StepResources) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": wanted.cpu, "num_gpus": wanted.gpu}
        if wanted.memory:
            options["memory"] = wanted.memory
        if wanted.custom:
            options["resources"] = dict(wanted.custom)
        asked = {"CPU": wanted.cpu, "GPU": wanted.gpu, "memory": float(wanted.memory or 0), **wanted.custom}
        short = self._short(asked)
        if short:
            self._totals = None  # the cluster may have grown: look again before failing
            short = self._short(asked)
        if short:
            have = ", ".join(f"{name}={total:g}" for name, _, total in short)
            need = ", ".join(f"{name}={amount:g}" for name, amount, _ in short)
            raise UnspoolError(
                f"step {spec.invocation_id!r} needs {need} but the whole Ray cluster has {have}; "
                "lower settings['resources'] of the step or add nodes that have them"
            )
        return options

    def _short(self, asked: dict[str, float]) -> list[tuple[str, float, float]]:
        if self._totals is None:
            self._totals = {k: float(v) for k, v in self.ray.cluster_resources().items()}
        return [
            (name, amount, self._totals.get(name, 0.0))
            for name, amount in asked.items()
            if amount > 0 and amount > self._totals.get(name, 0.0) + 1e-9
        ]

    def _cancel(self, ref: Any, reason: str, target: _Item | None = None) -> None:
        with self._lock:
            batch = self._tasks.get(ref)
            if batch is None:
                return
            for item in batch:
                if item.stop_reason is None:
                    item.stop_reason = reason if target is None or item is target else (
                        f"it shared its Ray task with step {target.spec.invocation_id!r}: {reason}"
                    )
        try:
            self.ray.cancel(ref, force=True)
        except Exception:  # pragma: no cover - already finished
            pass

    def _start_board(self) -> Any:
        """The run's :class:`StartBoard` actor, made on first use (call with the lock held)."""
        if self._board is None:
            actor = self.ray.remote(num_cpus=0, max_restarts=0)(StartBoard)
            self._board = actor.remote()
        return self._board

    def _start_clock(self, item: _Item, timeout: float, left: float) -> None:
        timer = threading.Timer(left, self._time_out, (item, timeout))
        timer.daemon = True
        with self._lock:
            if item.ended or item.future.done():
                return
            old, item.timer = item.timer, timer
            timer.start()
        if old is not None:
            old.cancel()

    def _started(self, item: _Item, timeout: float, signal: Any) -> None:
        """Its task started: the step's clock starts now. Without word from the start board
        (the actor was lost) it counts from the submission."""
        now = time.time()
        if signal.exception() is None:
            item.start = now
            self._start_clock(item, timeout, timeout)
        else:
            self._start_clock(item, timeout, max(0.0, timeout - (now - item.start)))

    def _time_out(self, item: _Item, timeout: float) -> None:
        if resolve(item.future, timed_out_result(item.spec, timeout, "its Ray task was cancelled", item.start)):
            self._cancel(item.ref, f"cancelled after its timeout of {timeout}s", item)

    def _finished(self, ref: Any, fut: Any) -> None:
        with self._lock:
            batch = self._tasks.pop(ref, [])
            for item in batch:
                self._items.pop(item.future, None)
                item.ended = True
            if batch:
                self._in_ray[batch[0].key] -= 1
        for item in batch:
            if item.timer is not None:
                item.timer.cancel()
            if item.signal is not None:  # release the waiter if its task never started
                board, token = item.signal
                board.started.remote(token)
        try:
            blobs = fut.result()
        except Exception as exc:
            results = [self._lost(item.spec, exc, item.stop_reason, item.start) for item in batch]
        else:
            results = []
            for item, blob in zip(batch, blobs):
                try:
                    results.append(load_result(blob))
                except Exception as exc:
                    results.append(failed_result(exc, f"the result of step {item.spec.invocation_id!r} could not be read: "))
        for item, result in zip(batch, results):
            resolve_soon(item.future, result)  # each in a thread: a result's callbacks never delay another's
        self._pump()  # what waited for this task's place

    def _lost(self, spec: StepSpec, exc: BaseException, stop_reason: str | None, start: float) -> StepResult:
        ray = self.ray
        if stop_reason is not None or isinstance(exc, ray.exceptions.TaskCancelledError):
            what = f"Ray task was cancelled ({stop_reason or 'by Ray'})"
        elif isinstance(exc, ray.exceptions.OutOfMemoryError):
            what = "Ray worker was killed for lack of memory"
        elif isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
            what = "Ray worker died"
        else:
            what = f"Ray task failed ({type(exc).__name__})"
        message = f"{what} while running step {spec.invocation_id!r}"
        detail = str(exc).strip().splitlines()
        lost = WorkerLostError(message + (f": {detail[0]}" if detail else ""))
        result = failed_result(lost, start_time=start)
        result.error["ray_error"] = type(exc).__name__  # type: ignore[index]
        try:
            artifact_store_for(spec.artifact_store_url).append_text(spec.logs_uri, f"--- {message} ---\n")
            result.logs_uri = spec.logs_uri
        except Exception:  # pragma: no cover
            pass
        return result
