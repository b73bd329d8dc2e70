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
* Failures: Ray never retries a task (``max_retries=0``). A worker that dies fails only the
  steps it held, and unspool applies the step's ``retry`` like anywhere else.
  ``cancel(future, reason)`` force-cancels the step's task (FAIL_FAST); a step with a
  ``timeout`` is cancelled when it passes and ends with a ``TimeoutError`` (Ray does not
  report when a task starts, so here the clock starts at submission).

Only this module imports ``ray``; install it with ``pip install 'unspool[ray]'``.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future
from typing import Any

from ._artifact_io import artifact_store_for
from ._errors import UnspoolError, WorkerLostError
from ._resources import StepResources
from ._runner import StepResult, StepSpec, failed_result, resolve, resolve_soon, timed_out_result
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


def run_remote(blob: bytes) -> bytes:
    """The Ray task: run a packed spec on a Ray worker, return the packed result."""
    return run_serialised(blob, exact_path=False)


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
        self._lock = threading.Lock()
        self._pending: dict[Any, tuple[StepSpec, str | None]] = {}  # ref -> (spec, stop reason)
        self._refs: dict[Future[StepResult], Any] = {}  # future -> ref, while pending
        self._totals: dict[str, float] | None = None
        self._packed_steps: dict[int, tuple[object, bytes]] = {}  # see dump_spec

    def __repr__(self) -> str:
        return f"<RayExecutor running={len(self._pending)}>"

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
        ref = self._task.options(**options).remote(blob)
        with self._lock:
            self._pending[ref] = (spec, None)
            self._refs[future] = ref
        timeout = spec.step.config.timeout
        timer = None
        start = time.time()
        if timeout is not None:  # Ray does not say when a task starts: the clock starts at submission
            timer = threading.Timer(timeout, self._time_out, (ref, future, spec, timeout, start))
            timer.daemon = True
            timer.start()

        def on_done(fut: Any) -> None:  # in Ray's callback thread: hand over at once
            threading.Thread(
                target=self._finished, args=(ref, fut, start, timer, future), name="unspool-ray-done", daemon=True
            ).start()

        ref.future().add_done_callback(on_done)
        return future

    def cancel(self, future: Future[StepResult], reason: str, running: bool = True) -> bool:
        """Force-cancel the step's task. Ray does not tell a queued task from a running one,
        so ``running=False`` leaves it alone; returns False (it may have started)."""
        with self._lock:
            ref = self._refs.get(future)
        if ref is not None and running:
            self._cancel(ref, reason)
        return False

    def shutdown(self) -> None:
        with self._lock:
            refs = list(self._pending)
        for ref in refs:
            self._cancel(ref, "the run ended")

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

    def _cancel(self, ref: Any, reason: str) -> None:
        with self._lock:
            if ref not in self._pending:
                return
            spec, _ = self._pending[ref]
            self._pending[ref] = (spec, reason)
        try:
            self.ray.cancel(ref, force=True)
        except Exception:  # pragma: no cover - already finished
            pass

    def _time_out(self, ref: Any, future: Future[StepResult], spec: StepSpec, timeout: float, start: float) -> None:
        if resolve(future, timed_out_result(spec, timeout, "its Ray task was cancelled", start)):
            self._cancel(ref, f"cancelled after its timeout of {timeout}s")

    def _finished(self, ref: Any, fut: Any, start: float, timer: threading.Timer | None,
                  future: Future[StepResult]) -> None:
        if timer is not None:
            timer.cancel()
        with self._lock:
            spec, stop_reason = self._pending.pop(ref, (None, None))
            self._refs.pop(future, None)
        assert spec is not None
        try:
            result = load_result(fut.result())
        except Exception as exc:
            result = self._lost(spec, exc, stop_reason, start)
        resolve(future, result)

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
