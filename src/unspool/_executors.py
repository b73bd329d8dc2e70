"""Executors: where a step spec turns into a step result.

The engine meets every executor at one narrow seam, ``submit(spec, done)``: run the spec
somewhere, then call ``done(result)`` from any thread. Threads today; processes and Ray
plug in here without touching the engine.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ._errors import ConfigError
from ._runner import StepResult, StepSpec, describe_error, run_step

Done = Callable[[StepResult], None]


class Executor(Protocol):
    name: str

    def submit(self, spec: StepSpec, done: Done) -> None: ...

    def shutdown(self) -> None: ...


class ThreadExecutor:
    """Runs steps in a bounded pool of threads of the orchestrating process."""

    name = "inline"

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="unspool-step")

    def submit(self, spec: StepSpec, done: Done) -> None:
        self._pool.submit(_run_and_report, spec, done)

    def shutdown(self) -> None:
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


def open_executor(kind: str, orchestrator: dict[str, Any] | None) -> Any:
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

    def __init__(self, name: str, error: BaseException) -> None:
        self.name = name
        self.error = error

    def submit(self, spec: StepSpec, done: Done) -> None:
        error = describe_error(self.error)
        error["message"] = f"the {self.name} executor could not start: {error['message']}"
        result = StepResult(ok=False, error=error, exception=self.error)
        threading.Thread(target=done, args=(result,), daemon=True).start()  # never re-enter the caller

    def cancel_all(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def _run_and_report(spec: StepSpec, done: Done) -> None:
    try:
        result = run_step(spec)
    except BaseException as exc:  # pragma: no cover - run_step reports step errors itself
        result = StepResult(ok=False, error=describe_error(exc), exception=exc)
    done(result)
