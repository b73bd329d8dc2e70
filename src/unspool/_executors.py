"""Executors: where a step spec turns into a step result.

The engine meets every executor at one narrow seam, in the manner of ``concurrent.futures``:

``submit(spec) -> Future[StepResult]``
    Run the spec somewhere. The future always ends with a :class:`StepResult`; a step that
    fails, a worker that dies, a timeout: all are failed results, never an exception set
    on the future. Callbacks may run in any thread.
``cancel(future, reason, running=True) -> bool``
    A step still queued never starts (its future gets a "not started" result and ``cancel``
    returns True). A running one is stopped too when ``running`` is true and the executor
    can stop it (a process or a Ray task; a thread cannot be stopped).
``shutdown()``
    Cancel everything and release the workers.

Each executor owns the timeouts of the steps it runs, counted from the moment a step
starts (not from its submission): when it passes, the future gets a ``TimeoutError``
result and the step is stopped where that is possible. ``in_process`` tells the engine
that steps run in threads of this process, so that it may run one in its own thread.

:class:`ThreadExecutor` (threads of the orchestrating process) is here; the process and
Ray executors live in ``_process_executor.py`` and ``_ray_executor.py``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._errors import ConfigError
from ._runner import (
    StepResult,
    StepSpec,
    failed_result,
    not_started_result,
    resolve,
    resolve_soon,
    run_step,
    timed_out_result,
)


class Executor(Protocol):
    """Where steps run (see the module docstring)."""

    name: str
    in_process: bool

    def submit(self, spec: StepSpec) -> Future[StepResult]: ...

    def cancel(self, future: Future[StepResult], reason: str, running: bool = True) -> bool: ...

    def shutdown(self) -> None: ...


class ThreadExecutor:
    """Runs steps in a bounded pool of threads of the orchestrating process.

    A step that passes its timeout is reported as timed out at once; its thread cannot be
    stopped and keeps running in the background, its eventual result ignored.
    """

    name = "inline"
    in_process = True

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="unspool-step")
        self._specs: dict[Future[StepResult], StepSpec] = {}  # submitted, not started yet
        self._lock = threading.Lock()

    def submit(self, spec: StepSpec) -> Future[StepResult]:
        future: Future[StepResult] = Future()
        with self._lock:
            self._specs[future] = spec
        self._pool.submit(self._run, spec, future)
        return future

    def _run(self, spec: StepSpec, future: Future[StepResult]) -> None:
        with self._lock:
            if self._specs.pop(future, None) is None:
                return  # cancelled while queued: never starts
        timer = None
        timeout = spec.step.config.timeout
        if timeout is not None:
            start = time.time()
            timer = threading.Timer(timeout, lambda: resolve(future, timed_out_result(
                spec, timeout, "its thread was abandoned and keeps running in the background", start)))
            timer.daemon = True
            timer.start()
        try:
            result = run_step(spec)
        except BaseException as exc:  # pragma: no cover - run_step reports step errors itself
            result = failed_result(exc)
        if timer is not None:
            timer.cancel()
        resolve(future, result)

    def cancel(self, future: Future[StepResult], reason: str, running: bool = True) -> bool:
        with self._lock:
            spec = self._specs.pop(future, None)
        if spec is None:
            return False  # running (threads cannot be stopped) or done
        resolve_soon(future, not_started_result(spec, reason))
        return True

    def shutdown(self) -> None:
        with self._lock:
            queued, self._specs = list(self._specs.items()), {}
        for future, spec in queued:
            resolve_soon(future, not_started_result(spec, "the run ended"))
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class ExecutorInfo:
    """What an ``orchestrator: {type: NAME, ...}`` section may hold for one executor.

    ``options`` maps each allowed key (besides ``type``) to its type(s); ``defaults`` are
    filled in by :func:`validate_orchestrator`, so the recorded config says what ran.
    """

    description: str
    options: dict[str, type | tuple[type, ...]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


# Executors an ``orchestrator:`` section can name. Without any section, a run uses the local
# executor in parallel mode (a bounded thread pool); ``{type: local}`` alone is sequential,
# as in the executor model unspool follows, and ``enable_parallel: true`` makes it parallel.
KNOWN_EXECUTORS: dict[str, ExecutorInfo] = {
    "local": ExecutorInfo(
        "steps run in threads of the orchestrating process; one at a time unless "
        "enable_parallel is true",
        options={"enable_parallel": bool},
        defaults={"enable_parallel": False},
    ),
    "process": ExecutorInfo(
        "every step runs in a fresh worker process of its own, as with runtime='isolated'; "
        "cpus (default: this machine's) bounds the CPUs their resources may add up to",
        options={"cpus": (int, float)},
    ),
    "ray": ExecutorInfo(
        "isolated steps (every step with all_steps: true) run as Ray tasks; without address a "
        "local Ray instance is started (num_cpus: default this machine's), address 'auto' or "
        "'ray://host:port' joins a cluster",
        options={"address": str, "all_steps": bool, "num_cpus": int},
        defaults={"all_steps": False},
    ),
}


def validate_orchestrator(cfg: dict[str, Any] | None, *, key: str = "orchestrator") -> dict[str, Any]:
    """Check an orchestrator section and return it with ``type`` and defaults filled in.

    ``{}``/None means "no section" and stays ``{}`` (the parallel default). Raises
    :class:`ConfigError` naming ``key.<option>`` and what was expected.
    """
    if not cfg:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError([(key, f"expected a mapping like {{type: local}}, got {cfg!r}")])
    kind = cfg.get("type", "local")
    info = KNOWN_EXECUTORS.get(kind) if isinstance(kind, str) else None
    if info is None:
        raise ConfigError(
            [(f"{key}.type", f"expected one of {sorted(KNOWN_EXECUTORS)}, got {kind!r}")]
        )
    problems = []
    for option, value in cfg.items():
        if option == "type":
            continue
        expected = info.options.get(option)
        if expected is None:
            allowed = ", ".join(sorted(info.options)) or "none"
            problems.append(
                (f"{key}.{option}", f"unknown option of executor {kind!r}; expected one of: {allowed}")
            )
        elif not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            problems.append((f"{key}.{option}", f"expected {names}, got {value!r}"))
    if problems:
        raise ConfigError(problems)
    return {"type": kind, **info.defaults, **{k: v for k, v in cfg.items() if k != "type"}}


def executor_kind(orchestrator: dict[str, Any] | None, runtime: str | None) -> str:
    """Where a step runs: ``inline`` (the run's thread pool), ``process`` or ``ray``.

    >>> executor_kind({}, "isolated"), executor_kind({"type": "ray"}, None)
    ('process', 'inline')
    >>> executor_kind({"type": "ray", "all_steps": True}, None), executor_kind({"type": "process"}, None)
    ('ray', 'process')
    """
    kind = (orchestrator or {}).get("type", "local")
    if kind == "ray":
        return "ray" if runtime == "isolated" or orchestrator.get("all_steps") else "inline"  # type: ignore[union-attr]
    if kind == "process" or runtime == "isolated":
        return "process"
    return "inline"


def open_executor(kind: str, orchestrator: dict[str, Any] | None) -> Executor:
    """A ``process`` or ``ray`` executor for one run; one that fails every step if it cannot start."""
    orchestrator = orchestrator or {}
    try:
        if kind == "ray":
            from ._ray_executor import RayExecutor  # lazy: Ray only for runs that use it

            return RayExecutor(orchestrator)
        from ._process_executor import ProcessExecutor  # lazy: only for runs with isolated steps

        return ProcessExecutor(cpus=orchestrator.get("cpus") if orchestrator.get("type") == "process" else None)
    except Exception as exc:
        return FailingExecutor(kind, exc)


class FailingExecutor:
    """Stands in for an executor that could not start: each step fails with the reason."""

    in_process = False

    def __init__(self, name: str, error: BaseException) -> None:
        self.name = name
        self.error = error

    def submit(self, spec: StepSpec) -> Future[StepResult]:
        future: Future[StepResult] = Future()
        resolve_soon(future, failed_result(self.error, f"the {self.name} executor could not start: "))
        return future

    def cancel(self, future: Future[StepResult], reason: str, running: bool = True) -> bool:
        return False

    def shutdown(self) -> None:
        pass
