"""The engine: one scheduler for static and dynamic pipelines.

How a run works
---------------
A :class:`Run` executes the pipeline body with itself set as the *current run*. Every
step call in the body becomes an :class:`Invocation` with a deterministic id: the first
call of step ``s`` is ``s``, then ``s_2``, ``s_3`` ... in call order.

* **Dynamic** pipelines run the body during execution. ``s(...)`` schedules the
  invocation and blocks until it finished; ``s.submit(...)`` schedules it and returns a
  :class:`StepRunFuture`; ``s.map``/``s.product`` schedule many at once.
* **Static** pipelines run the body first in a *compile* phase in which invocations are
  only recorded. The recorded DAG is validated and stored, then every invocation is
  scheduled. That is the only difference: a static pipeline is a dynamic one whose
  invocations were all recorded before any ran.

Scheduling state (all guarded by ``Run.lock``)
----------------------------------------------
``waiting``    invocations whose upstream invocations have not all finished; each keeps
               a count (``Invocation.waiting``) and sits in its upstreams' ``dependents``.
``ready``      a FIFO of invocations whose inputs exist, waiting for a free slot.
``running``    how many invocations hold one of the run's ``slots`` (its parallelism).

When an invocation finishes, its dependents' counts drop; those reaching zero join
``ready``. If it failed, its dependents are *skipped* (their inputs will never exist),
and under ``FAIL_FAST``/``STOP_ON_FAILURE`` everything not yet started is *stopped*.
Starting an invocation first computes its cache key: a hit finishes it at once as
``cached``; a miss records it ``running`` and hands a :class:`StepSpec` to the executor.
A worker thread that finishes a step goes on to start the next ready invocation itself
(a chain runs without thread hand-offs), and a synchronous call in a dynamic body runs
its step in the body's own thread when a slot is free.

All metadata goes through the buffered :class:`MetadataStore` writer; the only blocking
I/O on the path of a step is writing its artifacts.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import hashlib
import inspect
import itertools
import json
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import _queries
from ._artifact_io import ArtifactRef, load_artifact
from ._config import check_compiled_steps
from ._context import enter_run, in_step, leave_run
from ._errors import (
    BudgetExceeded,
    PipelineError,
    RunFailedError,
    StepDefinitionError,
    StepFailedError,
    StepInputError,
)
from ._events import Event, events
from ._executors import Executor, ThreadExecutor, executor_kind, open_executor
from ._futures import (
    ArtifactChunk,
    ArtifactFuture,
    ChildRunFuture,
    MapResultFuture,
    StepRunFuture,
    unmapped,
)
from ._ids import new_id
from ._loading import pipeline_source
from ._models import StoreReader
from ._progress import console_progress
from ._runner import (
    OutputTarget,
    StepResult,
    StepSpec,
    call_hook,
    describe_error,
    run_step,
)
from ._stores import Stores, open_stores
from ._types import ExecutionMode, ExecutionStatus, Produced

if TYPE_CHECKING:
    from ._pipeline import Pipeline
    from ._step import Step

S = ExecutionStatus
DEFAULT_PARALLELISM = 16
_CPUS = os.cpu_count() or 1

# -- in-memory records ------------------------------------------------------------------------------

@dataclass
class PreviousRun:
    """What an earlier execution of a run left behind, for resuming it."""

    run_id: str
    name: str
    steps: dict[str, tuple[dict[str, Any], dict[str, Produced]]]  # invocation id -> (row, outputs)
    children: dict[str, str]  # child invocation id -> child run id
    substitutions: dict[str, str]  # the built-in {date}/{time} the run started with


class Invocation:
    """One step call in a run: its inputs, its state, and what it produced."""

    __slots__ = (
        "run", "id", "step", "position", "step_run_id", "params", "inputs", "upstream",
        "status", "finished", "outputs", "error", "exception", "event", "dependents",
        "waiting", "cache_key", "attempt", "attempts", "start_time", "skip_reason", "recorded",
        "future",
    )

    def __init__(self, run: Run, inv_id: str, step: Step[Any], position: int) -> None:
        self.run = run
        self.id = inv_id
        self.step = step
        self.position = position
        self.step_run_id = new_id()
        self.params: dict[str, Any] = {}
        self.inputs: dict[str, tuple[bool, list[tuple[Any, int | None]]]] = {}
        self.upstream: list[Invocation] = []
        self.status = S.INITIALIZING
        self.finished = False
        self.outputs: dict[str, Produced] = {}
        self.error: dict[str, Any] | None = None
        self.exception: BaseException | None = None
        self.event = threading.Event()
        self.dependents: list[Invocation] = []
        self.waiting = 0
        self.cache_key: str | None = None
        self.attempt = 1
        self.attempts: list[dict[str, Any]] = []
        self.start_time: float | None = None
        self.skip_reason: str | None = None
        self.recorded = False  # its step run row has been written (or queued)
        self.future: Future[StepResult] | None = None  # while submitted to an executor

    @property
    def ok(self) -> bool:
        return self.status in (S.COMPLETED, S.CACHED)

    def wait(self) -> None:
        """Block until finished; raise :class:`StepFailedError` unless it succeeded."""
        if not self.finished:  # nothing runs while a static body compiles: never wait there
            self.run.ensure_not_compiling("wait for", self.id)
        self.event.wait()
        if not self.ok:
            if self.exception is not None and not isinstance(self.exception, Exception):
                raise self.exception  # Ctrl-C (KeyboardInterrupt), SystemExit: stop the body
            raise self.failure()

    def failure(self) -> StepFailedError:
        if self.status == S.FAILED:
            err = self.error or {}
            message = f"step {self.id!r} failed: {err.get('type', 'Error')}: {err.get('message', '')}"
        else:
            message = f"step {self.id!r} did not run ({self.status}): {self.skip_reason}"
        return StepFailedError(
            message,
            invocation_id=self.id,
            step_run_id=self.step_run_id,
            original_exception=self.exception,
            error=self.error,
            load_step_run=self.run.reader().get_step_run,
        )

    def output_futures(self) -> Any:
        specs = self.step.outputs
        if not specs:
            return None
        if len(specs) == 1:
            return ArtifactFuture(self, specs[0].name)
        return tuple(ArtifactFuture(self, s.name) for s in specs)


# -- helpers -----------------------------------------------------------------------------------------

_source_hashes: dict[Any, str] = {}


def source_hash(func: Callable[..., Any]) -> str:
    """Hash of a function's source (its bytecode when the source is unavailable)."""
    key = getattr(func, "__code__", func)
    cached = _source_hashes.get(key)
    if cached is None:
        try:
            text = inspect.getsource(func).encode()
        except (OSError, TypeError):
            code = getattr(func, "__code__", None)
            text = (code.co_code + repr(code.co_consts).encode()) if code else repr(func).encode()
        cached = _source_hashes[key] = hashlib.sha256(text).hexdigest()
    return cached


def _json_check(owner: str, values: dict[str, Any]) -> None:
    try:
        json.dumps(values)
    except (TypeError, ValueError):
        for name, value in values.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise StepInputError(
                    f"parameter {name!r} of {owner} is a {type(value).__name__}, which is not "
                    "JSON-serialisable; pass JSON values (numbers, strings, lists, dicts) as "
                    "parameters, or produce the value in a step and pass its output artifact"
                ) from None


def _artifact_sources(value: Any) -> tuple[bool, list[tuple[Any, int | None]]] | None:
    """Classify a step argument: artifact input(s) -> (is_list, sources), parameter -> None."""
    if isinstance(value, ArtifactFuture):
        return False, [(value, None)]
    if isinstance(value, StepRunFuture):
        return False, [(value._single(), None)]
    if isinstance(value, ArtifactChunk):
        return False, [(_one_source(value.source), value.index)]
    if isinstance(value, MapResultFuture):
        return True, [(f._single(), None) for f in value.futures]
    if isinstance(value, ChildRunFuture):
        return _artifact_sources(value.result())
    if _is_stored_artifact(value):
        return False, [(value, None)]
    if isinstance(value, (list, tuple)) and value and all(_is_artifact_like(v) for v in value):
        sources: list[tuple[Any, int | None]] = []
        for item in value:
            _, found = _artifact_sources(item)  # type: ignore[misc]
            sources.extend(found)
        return True, sources
    return None


def _one_source(value: Any) -> Any:
    if isinstance(value, StepRunFuture):
        return value._single()
    return value


def _is_stored_artifact(value: Any) -> bool:
    return getattr(value, "_unspool_artifact_version", False) is True or isinstance(value, Produced)


def _is_artifact_like(value: Any) -> bool:
    return isinstance(value, (ArtifactFuture, StepRunFuture, ArtifactChunk)) or _is_stored_artifact(value)


def _link(inv: Invocation, artifact: Produced, direction: str, name: str, position: int = 0,
          item_index: int | None = None) -> dict[str, Any]:
    """A lineage row: ``inv`` consumed (input) or produced (output) ``artifact``."""
    return {"step_run_id": inv.step_run_id, "artifact_version_id": artifact.id, "direction": direction,
            "name": name, "position": position, "item_index": item_index}


def _input_links(inv: Invocation, input_ids: list[tuple[str, int, Produced, int | None]]) -> list[dict[str, Any]]:
    return [_link(inv, p, "input", name, pos, index) for name, pos, p, index in input_ids]


class _Substitutions(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


# -- the run -------------------------------------------------------------------------------------------

class Run:
    """One execution of a pipeline (see the module docstring)."""

    def __init__(
        self,
        pipeline: Pipeline[Any],
        parameters: dict[str, Any],
        stores: Stores,
        *,
        parent: Run | None = None,
        invocation_id: str | None = None,
        previous: PreviousRun | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.previous = previous
        self.config = pipeline.config
        self.parameters = parameters
        self.stores = stores
        self.parent = parent
        self.invocation_id = invocation_id
        self.id = previous.run_id if previous else new_id()
        self.started = time.time()
        now = _dt.datetime.now()
        self.substitutions = _Substitutions(
            {"date": now.strftime("%Y_%m_%d"), "time": now.strftime("%H_%M_%S_%f")}
        )
        if previous is not None:
            self.substitutions.update(previous.substitutions)
        self.substitutions.update(self.config.substitutions)
        self.name = previous.name if previous else self._run_name(now)
        self.lock = threading.RLock()
        self.invocations: dict[str, Invocation] = {}
        self._counters: dict[str, int] = {}
        self.compiling = False
        self._recorded: list[Invocation] = []
        self.ready: deque[Invocation] = deque()
        self.running = 0
        budget = self.config.budget
        parallelism = self.config.max_parallelism or DEFAULT_PARALLELISM
        orchestrator = self.config.orchestrator or {}
        if orchestrator.get("type", "local") == "local" and orchestrator.get("enable_parallel") is False:
            parallelism = 1
        if budget and budget.max_parallelism:
            parallelism = min(parallelism, int(budget.max_parallelism))
        self.slots = parallelism
        self.cpu_ratio: float | None = None  # CPU/wall of recent inline steps (see _concurrency)
        self.executor: Executor = ThreadExecutor(parallelism)
        self.extra_executors: dict[str, Executor] = {}  # "process"/"ray", made on first use
        self._executor_lock = threading.Lock()
        self.stopping: str | None = None
        self.aborted = False  # the body raised: nothing new starts, whatever the mode
        self.unfinished = 0
        self.all_done = threading.Condition(self.lock)
        self.failed: list[Invocation] = []
        self.steps_used = 0
        self.timers: list[threading.Timer] = []
        self.children: list[Run] = []
        self.failed_children: list[Run] = []
        self.done = threading.Event()
        self.outcome: BaseException | None = None
        self.result: Any = None
        self.thread: threading.Thread | None = None

    def _run_name(self, now: _dt.datetime) -> str:
        template = self.config.run_name or "{pipeline}-{date}-{time}"
        values = _Substitutions(self.substitutions, pipeline=self.config.name)
        try:
            return template.format_map(values)
        except KeyError as exc:
            raise StepDefinitionError(
                f"run name {template!r} uses {{{exc.args[0]}}}, which no substitution defines"
            ) from None

    def reader(self) -> StoreReader:
        """Read access to what this run recorded (its stores)."""
        return StoreReader(self.stores)

    # -- lifecycle -------------------------------------------------------------------------------------
    def execute(self) -> Any:
        """Run the pipeline to the end; record a true final status whatever happens."""
        store = self.stores.metadata
        store.add_pipeline(self.config.name)
        orchestrator = f"{socket.gethostname()}:{os.getpid()}"
        if self.previous is not None:
            store.update_run(
                self.id, status=S.INITIALIZING.value, end_time=None, error=None, orchestrator=orchestrator,
                heartbeat=time.time(), config=self._recorded_config(),
            )
        else:
            # A chosen name can repeat (the default has {time}); a duplicate would fail the
            # flush and stay buffered, failing every later flush.
            if self.config.run_name and _queries.run_name_taken(store, self.name):
                raise PipelineError(
                    f"a run named {self.name!r} already exists and run names are unique; put "
                    "{time} (or another changing substitution) in run_name, or choose another name"
                )
            store.insert_run(
                {
                    "id": self.id,
                    "name": self.name,
                    "pipeline_name": self.config.name,
                    "status": S.INITIALIZING.value,
                    "dynamic": self.config.dynamic,
                    "parent_run_id": self.parent.id if self.parent else None,
                    "invocation_id": self.invocation_id,
                    "parameters": self.parameters,
                        "config": self._recorded_config(),
                    "dag": None,
                    "error": None,
                    "run_metadata": {},
                    "orchestrator": orchestrator,
                    "heartbeat": time.time(),
                    "start_time": self.started,
                    "end_time": None,
                    "created_at": self.started,
                }
            )
        store.beat(self.id)
        store.flush()  # a run exists durably before any of its steps runs
        self.stores.artifacts.makedirs(self.stores.artifacts.join(self.id))
        self._emit_run(S.INITIALIZING)
        token = enter_run(self)
        body_error: BaseException | None = None
        result: Any = None
        try:
            self._hook(self.config.on_init)
            if self.config.dynamic:
                self._mark_running()
                result = self.pipeline.func(**self.parameters)
            else:
                self.compiling = True
                try:
                    result = self.pipeline.func(**self.parameters)
                finally:
                    self.compiling = False
                if self.config.steps:  # names under steps: must be steps of this pipeline
                    check_compiled_steps(self.config, [inv.step for inv in self._recorded])
                self._mark_running()
                self._release_recorded()
            self._wait_all()
        except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised
            body_error = exc
            self.aborted = True
            self._stop_everything(f"the pipeline body raised {type(exc).__name__}")
            self._wait_all()
        finally:
            leave_run(token)
            for timer in self.timers:
                timer.cancel()
            self.executor.shutdown()
            for executor in self.extra_executors.values():
                executor.shutdown()
        status, error = self._final_status(body_error)
        if status == S.FAILED:
            self._hook(self.config.on_failure, body_error or RunFailedError(error["message"]))
        else:
            self._hook(self.config.on_success)
        self._hook(self.config.on_cleanup)
        store.update_run(
            self.id,
            status=status.value,
            end_time=time.time(),
            error=error,
            run_metadata=self._run_metadata(),
        )
        store.unbeat(self.id)
        self._emit_run(status, detail=error["message"] if error else None)
        store.flush()
        self.result = result
        if body_error is not None:
            try:
                body_error.run_id = self.id  # type: ignore[attr-defined]
            except AttributeError:
                pass
            raise body_error
        if status == S.FAILED:
            exc = RunFailedError(f"pipeline run {self.name!r} failed: {error['message']}")
            exc.run_id = self.id  # type: ignore[attr-defined]
            raise exc
        return result

    def _mark_running(self) -> None:
        """Initializing (hooks, compiling a static body) is over: steps may start now."""
        self.stores.metadata.update_run(self.id, status=S.RUNNING.value)
        self._emit_run(S.RUNNING)

    def _recorded_config(self) -> dict[str, Any]:
        return {
            **self.config.recorded(),
            "source": pipeline_source(self.pipeline),
            "resolved_substitutions": {k: self.substitutions[k] for k in ("date", "time")},
        }

    def _final_status(self, body_error: BaseException | None) -> tuple[ExecutionStatus, dict[str, Any] | None]:
        failed_ids = [inv.id for inv in self.failed]
        if body_error is not None:
            err = describe_error(body_error)
            err["failed_steps"] = failed_ids
            if isinstance(body_error, StepFailedError):
                err["message"] = f"{body_error}"
            if isinstance(body_error, KeyboardInterrupt):
                err["message"] = "interrupted (KeyboardInterrupt)"
                return S.STOPPED, err
            return S.FAILED, err
        if self.failed_children and not failed_ids:
            names = ", ".join(c.invocation_id or c.id for c in self.failed_children)
            return S.FAILED, {"message": f"child run(s) failed: {names}", "failed_steps": [],
                              "failed_children": [c.id for c in self.failed_children]}
        if failed_ids:
            shown = ", ".join(failed_ids[:10]) + (f" and {len(failed_ids) - 10} more" if len(failed_ids) > 10 else "")
            return S.FAILED, {"message": f"step(s) failed: {shown}", "failed_steps": failed_ids}
        return S.COMPLETED, None

    def status_counts(self) -> dict[str, int]:
        """How many of this run's invocations are in each status."""
        counts: dict[str, int] = {}
        for inv in list(self.invocations.values()):
            counts[inv.status.value] = counts.get(inv.status.value, 0) + 1
        return counts

    def _run_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"step_counts": self.status_counts()}
        if self.config.budget is not None:
            meta["budget_used"] = self.budget_used()
        return meta

    def budget_used(self) -> dict[str, Any]:
        return {
            "steps": self.steps_used,
            "duration_s": round(time.time() - self.started, 3),
            "max_parallelism": self.slots,
        }

    def budget_remaining(self) -> dict[str, Any] | None:
        budget = self.config.budget
        if budget is None:
            return None
        return {
            "steps": None if budget.max_steps is None else budget.max_steps - self.steps_used,
            "duration_s": None if budget.max_duration_s is None else budget.max_duration_s - (time.time() - self.started),
            "max_fan_out": budget.max_fan_out,
            "max_parallelism": budget.max_parallelism,
        }

    def _hook(self, hook: Callable[..., Any] | None, exc: BaseException | None = None) -> None:
        if hook is None:
            return
        try:
            call_hook(hook, exc)
        except Exception as hook_exc:
            import sys

            print(f"unspool: pipeline hook {getattr(hook, '__name__', hook)!r} raised {hook_exc!r}", file=sys.stderr)
            self.stores.metadata.update_run(self.id, error={"hook_error": describe_error(hook_exc)})

    def _emit_run(self, status: ExecutionStatus, detail: str | None = None) -> None:
        if events.active:
            events.emit(Event("run", self.id, status, detail=detail, step_name=self.config.name))

    def _wait_all(self) -> None:
        with self.all_done:
            while self.unfinished:
                self.all_done.wait(0.5)

    def _stop_everything(self, reason: str) -> None:
        with self.lock:
            if self.stopping is None:
                self.stopping = reason
            reason = self.stopping
            victims = [inv for inv in self.invocations.values() if not inv.finished and inv.start_time is None]
            self.ready.clear()
        for inv in victims:
            self._finish_unrun(inv, S.STOPPED, reason)
        if self.extra_executors:
            self._stop_isolated(reason, kill=self.config.execution_mode == ExecutionMode.FAIL_FAST)

    def _stop_isolated(self, reason: str, kill: bool) -> None:
        """Isolated steps still queued in their executor never start; with ``kill`` (FAIL_FAST)
        running ones are killed too. Either way they are recorded as stopped."""
        with self.lock:
            submitted = [
                inv for inv in self.invocations.values()
                if not inv.finished and inv.future is not None and not self._executor_for(inv).in_process
            ]
        for inv in submitted:
            future = inv.future
            if future is None or not self._executor_for(inv).cancel(future, reason, running=kill):
                if not kill:
                    continue  # it started before the stop: it finishes (STOP_ON_FAILURE)
                what = "killed while running"
            else:
                what = "not started"
            with self.lock:
                if inv.finished:
                    continue  # it finished on its own meanwhile
                inv.skip_reason = f"{what}: {reason}"
                inv.error = {"type": S.STOPPED.value, "message": inv.skip_reason}
                self._finish(inv, S.STOPPED)
            now = time.time()
            inv.attempts.append({"attempt": inv.attempt, "status": S.STOPPED.value, "start_time": inv.start_time,
                                 "end_time": now, "error": inv.error})
            self._record_step(inv, S.STOPPED, error=inv.error, end_time=now, attempts=list(inv.attempts))

    # -- body API ---------------------------------------------------------------------------------------
    def ensure_not_compiling(self, what: str, invocation_id: str) -> None:
        if self.compiling:
            raise PipelineError(
                f"cannot {what} the output of {invocation_id!r} while compiling static pipeline "
                f"{self.config.name!r}: data exists only at run time. Pass the output to the next "
                "step directly, or use @pipeline(dynamic=True) for data-dependent control flow"
            )

    def load_produced(self, produced: Produced, item_index: int | None = None) -> Any:
        ref = ArtifactRef(produced.uri, produced.materializer, produced.data_type, item_index)
        return load_artifact(self.stores.artifacts, ref)

    def version_of(self, produced: Produced) -> int:
        if produced.version is None:
            self.stores.metadata.flush()
        return produced.version  # type: ignore[return-value]

    def check_budget(self, new_steps: int, fan_out: int | None = None) -> None:
        budget = self.config.budget
        root = self.root()
        if budget is not None:
            if budget.max_duration_s is not None and time.time() - self.started > budget.max_duration_s:
                raise BudgetExceeded("max_duration_s", budget.max_duration_s, time.time() - self.started)
            if fan_out is not None and budget.max_fan_out is not None and fan_out > budget.max_fan_out:
                raise BudgetExceeded("max_fan_out", budget.max_fan_out, 0, fan_out)
        root_budget = root.config.budget
        if root_budget is not None and root_budget.max_steps is not None and root.steps_used + new_steps > root_budget.max_steps:
            raise BudgetExceeded("max_steps", root_budget.max_steps, root.steps_used, new_steps)

    def root(self) -> Run:
        run = self
        while run.parent is not None:
            run = run.parent
        return run

    def _count_steps(self, n: int) -> None:
        run: Run | None = self
        while run is not None:
            run.steps_used += n
            run = run.parent

    def call_step(self, step: Step[Any], args: tuple[Any, ...], kwargs: dict[str, Any], mode: str) -> Any:
        self.check_budget(1)
        configured = self._configure(step)
        self._check_output_names(configured)
        params, inputs = self._bind(configured, args, kwargs)
        inv = self._new_invocation(configured, params, inputs)
        self._count_steps(1)
        if self.compiling:
            self._recorded.append(inv)
            return inv.output_futures() if mode == "sync" else StepRunFuture(inv)
        self._record_initializing(inv)
        self._schedule(inv)
        if mode != "sync":
            self._pump(run_here=None)
            return StepRunFuture(inv)
        self._pump(run_here=inv)
        inv.wait()
        return inv.output_futures()

    def map_step(self, step: Step[Any], args: tuple[Any, ...], kwargs: dict[str, Any], product: bool) -> MapResultFuture:
        if self.compiling:
            raise PipelineError(
                f"{step.name}.{'product' if product else 'map'}() needs the length of its inputs, "
                "which exists only at run time; use @pipeline(dynamic=True)"
            )
        configured = self._configure(step)
        self._check_output_names(configured)
        try:
            bound = configured.signature.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise StepInputError(f"step {step.name!r} cannot be mapped with these arguments: {exc}") from None
        mapped: dict[str, list[Any]] = {}
        fixed: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if isinstance(value, unmapped):
                fixed[name] = value.value
                continue
            items = self._sequence_items(step.name, name, value)
            if items is None:
                fixed[name] = value
            else:
                mapped[name] = items
        if not mapped:
            raise StepInputError(
                f"{step.name}.{'product' if product else 'map'}() got no sequence input to map over; "
                "pass a list-like artifact, a list of artifacts, a map result or a list"
            )
        if product:
            combos = [dict(zip(mapped, values)) for values in itertools.product(*mapped.values())]
        else:
            lengths = {name: len(items) for name, items in mapped.items()}
            if len(set(lengths.values())) > 1:
                detail = ", ".join(f"{n}={length}" for n, length in lengths.items())
                raise StepInputError(
                    f"{step.name}.map() needs mapped inputs of equal length, got {detail}; use "
                    ".product() for all combinations or unmapped(...) to pass an input whole"
                )
            count = next(iter(lengths.values()))
            combos = [{name: items[i] for name, items in mapped.items()} for i in range(count)]
        self.check_budget(len(combos), fan_out=len(combos))
        futures = []
        invs = []
        for combo in combos:
            params, inputs = self._bind(configured, (), {**fixed, **combo})
            inv = self._new_invocation(configured, params, inputs)
            invs.append(inv)
            futures.append(StepRunFuture(inv))
        self._count_steps(len(invs))
        for inv in invs:
            self._record_initializing(inv)
        for inv in invs:
            self._schedule(inv)
        self._pump(run_here=None)
        return MapResultFuture(futures)

    def _sequence_items(self, step_name: str, arg: str, value: Any) -> list[Any] | None:
        if isinstance(value, MapResultFuture):
            return [f._single() for f in value.futures]
        if isinstance(value, StepRunFuture):
            value = value._single()
        if isinstance(value, ArtifactFuture) or _is_stored_artifact(value):
            count = value.item_count
            if count is None:
                raise StepInputError(
                    f"cannot map {step_name!r} over input {arg!r}: artifact of type "
                    f"{value.data_type.rpartition(':')[2]} is not a sequence; wrap it in unmapped(...) "
                    "to pass it whole"
                )
            return [ArtifactChunk(value, i) for i in range(count)]
        if isinstance(value, (list, tuple)):
            return list(value)
        return None

    def call_child(self, pipeline: Pipeline[Any], args: tuple[Any, ...], kwargs: dict[str, Any], mode: str) -> Any:
        """Run a dynamic pipeline as a child run of this one (``child(...)``/``child.submit(...)``)."""
        if not pipeline.config.dynamic:
            raise PipelineError(
                f"pipeline {pipeline.name!r} is static; only dynamic pipelines (@pipeline(dynamic=True)) "
                "can be called from a pipeline body"
            )
        if self.compiling:
            raise PipelineError(
                f"static pipeline {self.config.name!r} cannot call child pipeline {pipeline.name!r}; "
                "make the parent dynamic"
            )
        depth = self.depth() + 1
        root_budget = self.root().config.budget
        if root_budget is not None and root_budget.max_depth is not None and depth > root_budget.max_depth:
            raise BudgetExceeded("max_depth", root_budget.max_depth, depth - 1, 1)
        self.check_budget(0)
        params = bind_parameters(pipeline, args, kwargs)
        with self.lock:
            key = f"pipeline:{pipeline.name}"
            n = self._counters.get(key, 0) + 1
            self._counters[key] = n
            invocation_id = key if n == 1 else f"{key}_{n}"
        previous = None
        if self.previous is not None and invocation_id in self.previous.children:
            previous = load_previous(self.stores, self.previous.children[invocation_id])
        child = Run(pipeline, params, self.stores, parent=self, invocation_id=invocation_id, previous=previous)
        self.children.append(child)
        if mode == "sync":
            return child.execute_as_child()
        with self.lock:
            self.unfinished += 1

        def run_child() -> None:
            try:
                child.execute_as_child()
            except BaseException:  # noqa: BLE001 - kept on the child, raised by result()
                pass
            finally:
                with self.lock:
                    self.unfinished -= 1
                    if self.unfinished == 0:
                        self.all_done.notify_all()

        thread = threading.Thread(target=contextvars.copy_context().run, args=(run_child,),
                                  name=f"unspool-{invocation_id}", daemon=True)
        child.thread = thread
        thread.start()
        return ChildRunFuture(child)

    def execute_as_child(self) -> Any:
        """Execute, remembering the outcome so futures and the parent can see it."""
        try:
            self.result = self.execute()
        except BaseException as exc:
            self.outcome = exc
            self.root_failed_children()
            raise
        finally:
            self.done.set()
        return self.result

    def root_failed_children(self) -> None:
        if self.parent is not None:
            with self.parent.lock:
                self.parent.failed_children.append(self)

    def depth(self) -> int:
        depth, run = 0, self
        while run.parent is not None:
            depth, run = depth + 1, run.parent
        return depth

    def embed_child(self, pipeline: Pipeline[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not pipeline.config.dynamic:
            raise PipelineError(f"only dynamic pipelines can be embedded; {pipeline.name!r} is static")
        params = bind_parameters(pipeline, args, kwargs)
        return pipeline.func(**params)

    # -- building invocations ----------------------------------------------------------------------------
    def _configure(self, step: Step[Any]) -> Step[Any]:
        overrides = self.config.steps.get(step.name)
        if overrides:
            step = step.with_options(**overrides)
        return step

    def _check_output_names(self, step: Step[Any]) -> None:
        """Parse outputs and fill name placeholders at the call, so a bad one fails there."""
        if any(spec.artifact_name and "{" in spec.artifact_name for spec in step.outputs):
            probe = Invocation(self, step.name, step, -1)
            for spec in step.outputs:
                self._artifact_name(probe, spec)

    def _bind(self, step: Step[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        sig = step.signature
        if step.config.parameters:
            kwargs = {**{k: v for k, v in step.config.parameters.items() if k in sig.parameters}, **kwargs}
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise StepInputError(
                f"step {step.name!r} called with wrong arguments: {exc}. Its signature is "
                f"{step.name}{sig}"
            ) from None
        bound.apply_defaults()
        params: dict[str, Any] = {}
        inputs: dict[str, tuple[bool, list[tuple[Any, int | None]]]] = {}
        for name, value in bound.arguments.items():
            kind = sig.parameters[name].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise StepDefinitionError(f"step {step.name!r}: *args/**kwargs parameters are not supported")
            sources = _artifact_sources(value)
            if sources is None:
                params[name] = value
            else:
                inputs[name] = sources
        _json_check(f"step {step.name!r}", params)
        return params, inputs

    def _new_invocation(self, step: Step[Any], params: dict[str, Any], inputs: dict[str, Any]) -> Invocation:
        for _, sources in inputs.values():  # outputs of a child run: wait for that run first
            for source, _ in sources:
                if isinstance(source, ArtifactFuture) and source._inv.run is not self:
                    source._inv.event.wait()
        with self.lock:
            n = self._counters.get(step.name, 0) + 1
            self._counters[step.name] = n
            inv_id = step.name if n == 1 else f"{step.name}_{n}"
            while inv_id in self.invocations:  # a step literally named "s_2"
                n += 1
                self._counters[step.name] = n
                inv_id = f"{step.name}_{n}"
            inv = Invocation(self, inv_id, step, len(self.invocations))
            inv.params = params
            inv.inputs = inputs
            seen: set[int] = set()
            for _, sources in inputs.values():
                for source, _ in sources:
                    if isinstance(source, ArtifactFuture):
                        up = source._inv
                        if up.run is not self:
                            if up.run.root() is not self.root():
                                raise PipelineError(f"input of {inv_id!r} comes from another pipeline run")
                            if not up.finished:
                                raise PipelineError(f"input of {inv_id!r} comes from an unfinished child run")
                        if id(up) not in seen:
                            seen.add(id(up))
                            inv.upstream.append(up)
            self.invocations[inv_id] = inv
            self.unfinished += 1
        return inv

    def _release_recorded(self) -> None:
        invs, self._recorded = self._recorded, []
        self.check_budget(0)
        dag = {
            "nodes": [{"id": inv.id, "step": inv.step.name} for inv in invs],
            "edges": [[up.id, inv.id] for inv in invs for up in inv.upstream],
        }
        self.stores.metadata.update_run(self.id, dag=dag)
        for inv in invs:
            self._record_initializing(inv)
        for inv in invs:
            self._schedule(inv)
        self._pump(run_here=None)

    # -- scheduling ---------------------------------------------------------------------------------------
    def _schedule(self, inv: Invocation) -> None:
        """Put an invocation on ``ready``, or make it wait for its upstream invocations."""
        blocked_by: Invocation | None = None
        with self.lock:
            if inv.finished:
                return
            if self.stopping is not None and self.config.execution_mode != ExecutionMode.CONTINUE_ON_FAILURE:
                blocked_by = inv
            else:
                pending = 0
                for up in inv.upstream:
                    if not up.finished:
                        pending += 1
                        up.dependents.append(inv)
                    elif not up.ok:
                        blocked_by = up
                inv.waiting = pending
                if blocked_by is None and pending == 0:
                    self.ready.append(inv)
        if blocked_by is inv:
            self._finish_unrun(inv, S.STOPPED, f"the run is stopping ({self.stopping})")
        elif blocked_by is not None:
            self._finish_unrun(inv, *self._unrunnable_because(blocked_by))

    def _concurrency(self) -> int:
        """How many invocations may hold a slot now: all ``slots`` while steps mostly wait
        (I/O, sleeps, remote calls), fewer while they mostly compute in this process, where
        extra threads only fight over the GIL (a 5,000-step fan-out of trivial steps ran
        2x faster on 2 threads than on 16). Learnt from the CPU/wall ratio of inline steps."""
        ratio = self.cpu_ratio
        if ratio is None:
            return self.slots
        return max(min(self.slots, _CPUS), min(self.slots, int(_CPUS / max(ratio, 1e-3))))

    def _learn_cpu_ratio(self, result: StepResult) -> None:
        wall = result.end_time - result.start_time
        if result.cpu_time is None or wall <= 0:
            return
        ratio = min(result.cpu_time / wall, 1.0)
        previous = self.cpu_ratio
        self.cpu_ratio = ratio if previous is None else 0.8 * previous + 0.2 * ratio

    def _halted(self) -> bool:
        """True once a failure stopped the run: nothing new may start."""
        return self.stopping is not None and (
            self.aborted or self.config.execution_mode != ExecutionMode.CONTINUE_ON_FAILURE
        )

    def _unrunnable_because(self, up: Invocation) -> tuple[ExecutionStatus, str]:
        return S.SKIPPED, f"upstream step {up.id!r} {up.status.value}"

    def _pump(self, run_here: Invocation | bool | None) -> None:
        """Start ready invocations while slots are free.

        ``run_here=True`` lets this thread run any of them itself (a worker continuing a
        chain); an :class:`Invocation` lets it run only that one (a synchronous call).
        """
        while True:
            with self.lock:
                if not self.ready or self.running >= self._concurrency() or self._halted():
                    return
                inv = self.ready.popleft()
                if inv.finished:
                    continue
                self.running += 1
                inv.start_time = time.time()  # claimed: a stop no longer treats it as queued
            try:
                spec = self._start(inv)
            except Exception as exc:  # an invocation left unfinished would hang the run
                self._fail_to_start(inv, exc)
                continue
            if spec is None:
                continue
            here = run_here is True or run_here is inv
            if here and inv.step.config.timeout is None and self._executor_for(inv).in_process:
                self._record_result(inv, spec, run_step(spec))
                if run_here is inv:
                    run_here = None
            else:
                self._submit(inv, spec)

    def _fail_to_start(self, inv: Invocation, exc: Exception) -> None:
        """Record an invocation whose start (cache key, spec) raised as failed, freeing its slot."""
        if inv.finished:
            return
        inv.start_time = inv.start_time or time.time()
        inv.error, inv.exception = describe_error(exc), exc
        self._record_step(inv, S.FAILED, error=inv.error, start_time=inv.start_time, end_time=time.time())
        self._finish(inv, S.FAILED)

    def _submit(self, inv: Invocation, spec: StepSpec) -> None:
        attempt = inv.attempt

        def done(future: Future[StepResult]) -> None:
            result = future.result()
            if inv.finished or inv.attempt != attempt or not result.started:
                return  # stopped meanwhile (the stop records it); this attempt's result is not wanted
            inv.future = None
            self._record_result(inv, spec, result)
            self._pump(run_here=True)

        future = inv.future = self._executor_for(inv).submit(spec)
        future.add_done_callback(done)

    def _executor_for(self, inv: Invocation) -> Executor:
        """The thread pool, or for ``runtime="isolated"`` steps (every step under
        ``orchestrator: {type: process}`` or ``{type: ray, all_steps: true}``) the run's
        process or Ray executor, made on first use (see ``_executors.executor_kind``)."""
        kind = executor_kind(self.config.orchestrator, inv.step.config.runtime)
        if kind == "inline":
            return self.executor
        executor = self.extra_executors.get(kind)
        if executor is None:
            with self._executor_lock:
                executor = self.extra_executors.get(kind)
                if executor is None:
                    executor = self.extra_executors[kind] = open_executor(kind, self.config.orchestrator)
        return executor

    # -- starting and finishing ------------------------------------------------------------------------------
    def _start(self, inv: Invocation) -> StepSpec | None:
        """Cache lookup, then record the step run as running and build its spec."""
        step = inv.step
        enable_cache = step.config.enable_cache if step.config.enable_cache is not None else self.config.enable_cache
        refs: dict[str, tuple[bool, list[ArtifactRef]]] = {}
        input_ids: list[tuple[str, int, Produced, int | None]] = []
        for name, (is_list, sources) in inv.inputs.items():
            lst = []
            for pos, (source, index) in enumerate(sources):
                produced = source._inv.outputs[source.output_name] if isinstance(source, ArtifactFuture) else source
                lst.append(ArtifactRef(produced.uri, produced.materializer, produced.data_type, index))
                input_ids.append((name, pos, produced, index))
            refs[name] = (is_list, lst)
        inv.cache_key = self._cache_key(inv, input_ids)
        retrying = inv.status == S.RUNNING  # a retry: its step run and links are recorded already
        # The earlier execution is consulted once, at the first attempt (a retry that did it
        # again would reset the attempt count and retry forever).
        if self.previous is not None and not retrying and self._reuse_previous(inv):
            return None
        if enable_cache:
            hit = self._lookup_cache(inv.cache_key, inv.step.name)
            if hit is not None:
                self._record_cached(inv, input_ids, *hit)
                return None
        inv.start_time = time.time()
        inv.status = S.RUNNING
        if not retrying:
            self._record_step(inv, S.RUNNING, start_time=inv.start_time, cache_key=inv.cache_key)
            self.stores.metadata.insert_links(_input_links(inv, input_ids))
        self._emit_step(inv)
        return self._spec(inv, refs)

    def _record_step(self, inv: Invocation, status: ExecutionStatus, **fields: Any) -> None:
        """Write the step run's row: inserted the first time, updated (merged in the buffer) after."""
        if inv.recorded:
            self.stores.metadata.update_step_run(inv.step_run_id, status=status.value, **fields)
        else:
            row = self._step_row(inv, status)
            row.update(fields)
            self.stores.metadata.insert_step_run(row)
            inv.recorded = True

    def _record_initializing(self, inv: Invocation) -> None:
        """A new invocation is visible (waiting for inputs or a slot) before it starts.

        On resume, an invocation id that ran before keeps its earlier row until it is either
        reused or replaced (``_reuse_previous``).
        """
        if self.previous is not None and inv.id in self.previous.steps:
            return
        self._record_step(inv, S.INITIALIZING)
        self._emit_step(inv)

    def _reuse_previous(self, inv: Invocation) -> bool:
        """On resume: reuse the invocation's earlier step run if it succeeded on the same inputs.

        Anything else that ran before under this invocation id (failed, stopped, or different
        inputs) is replaced by the new attempt; its attempts are kept in the new record.
        """
        prev = self.previous.steps.get(inv.id) if self.previous else None
        if prev is None:
            return False
        row, outputs = prev
        if row["status"] in (S.COMPLETED.value, S.CACHED.value) and row["cache_key"] == inv.cache_key:
            inv.step_run_id = row["id"]
            inv.outputs = outputs
            inv.start_time = row["start_time"] or time.time()
            self._finish(inv, S(row["status"]), reused=True)
            return True
        self.stores.metadata.delete_step_run(row["id"])
        inv.attempts = [{**a, "earlier_run_attempt": True} for a in row["attempts"] or []]
        inv.attempt = len(inv.attempts) + 1
        return False

    def _spec(self, inv: Invocation, refs: dict[str, tuple[bool, list[ArtifactRef]]]) -> StepSpec:
        root = self.stores.artifacts
        base = root.join(self.id, inv.id)
        suffix = "" if inv.attempt == 1 else f".attempt{inv.attempt}"
        outputs = []
        materializers = inv.step.config.output_materializers
        for i, spec in enumerate(inv.step.outputs):
            override = None
            if isinstance(materializers, dict):
                override = materializers.get(spec.name)
            elif isinstance(materializers, (list, tuple)):
                override = materializers[i] if i < len(materializers) else None
            elif materializers is not None:
                override = materializers
            outputs.append(
                OutputTarget(
                    spec.name,
                    root.join(self.id, f"{inv.id}.{spec.name}{suffix}"),
                    f"{override.__module__}:{override.__qualname__}" if override else None,
                )
            )
        return StepSpec(
            run_id=self.id,
            step_run_id=inv.step_run_id,
            invocation_id=inv.id,
            pipeline_name=self.config.name,
            step=inv.step,
            attempt=inv.attempt,
            parameters=inv.params,
            inputs=refs,
            outputs=outputs,
            artifact_store_url=self.stores.artifact_root,
            logs_uri=base + ".log",
            budget_remaining=self.budget_remaining(),
        )

    def _step_row(self, inv: Invocation, status: ExecutionStatus) -> dict[str, Any]:
        return {
            "id": inv.step_run_id,
            "run_id": self.id,
            "invocation_id": inv.id,
            "position": inv.position,
            "step_name": inv.step.name,
            "status": status.value,
            "parameters": inv.params,
            "config": inv.step.config.recorded(),
            "upstream": [up.id for up in inv.upstream],
            "cache_key": inv.cache_key,
            "original_step_run_id": None,
            "error": None,
            "attempts": [],
            "step_metadata": {},
            "logs_uri": None,
            "start_time": inv.start_time,
            "end_time": None,
        }

    def _cache_key(self, inv: Invocation, input_ids: list[tuple[str, int, Produced, int | None]]) -> str:
        step = inv.step
        h = hashlib.sha256()
        h.update(source_hash(step.func).encode())
        h.update(json.dumps(inv.params, sort_keys=True, default=repr).encode())
        for name, pos, produced, index in input_ids:
            h.update(f"|{name}:{pos}:{produced.content_hash}:{index}".encode())
        for spec in step.outputs:
            h.update(f"|out:{spec.name}:{self._artifact_name(inv, spec)}".encode())
        h.update(repr(step.config.recorded()["output_materializers"]).encode())
        return h.hexdigest()

    def _lookup_cache(self, key: str, step_name: str) -> tuple[str, dict[str, Produced]] | None:
        memo = self.stores.cache_memo.get(key)
        if memo is not None:
            return memo
        return self.stores.cached_outputs(step_name).get(key)

    def _record_cached(self, inv: Invocation, input_ids: list[Any], original_id: str, outputs: dict[str, Produced]) -> None:
        now = time.time()
        inv.start_time = now
        inv.outputs = outputs
        store = self.stores.metadata
        self._record_step(inv, S.CACHED, original_step_run_id=original_id, cache_key=inv.cache_key,
                          start_time=now, end_time=now)
        store.insert_links(
            _input_links(inv, input_ids) + [_link(inv, p, "output", name) for name, p in outputs.items()]
        )
        self._finish(inv, S.CACHED)

    def _artifact_name(self, inv: Invocation, spec: Any) -> str:
        template = spec.artifact_name or f"{self.config.name}::{inv.step.name}::{spec.name}"
        if "{" not in template:
            return template
        values = _Substitutions(self.substitutions)
        values.update(inv.step.config.substitutions)
        try:
            return template.format_map(values)
        except KeyError as exc:
            raise StepDefinitionError(
                f"artifact name {template!r} of step {inv.step.name!r} uses {{{exc.args[0]}}}, which "
                "no substitution defines; add it to @step(substitutions=...) or "
                "@pipeline(substitutions=...)"
            ) from None

    def _record_result(self, inv: Invocation, spec: StepSpec, result: StepResult) -> None:
        store = self.stores.metadata
        if self._executor_for(inv).in_process:
            self._learn_cpu_ratio(result)
        attempt_record = {
            "attempt": inv.attempt,
            "status": "completed" if result.ok else "failed",
            "start_time": result.start_time,
            "end_time": result.end_time,
            "error": None if result.ok else {k: v for k, v in (result.error or {}).items() if k != "traceback"},
        }
        inv.attempts.append(attempt_record)
        retry = inv.step.config.retry or self.config.retry
        if not result.ok and retry is not None and inv.attempt <= retry.max_retries and self.stopping is None:
            delay = retry.delay * (retry.backoff ** (inv.attempt - 1))
            inv.attempt += 1
            store.update_step_run(inv.step_run_id, attempts=list(inv.attempts), logs_uri=result.logs_uri)
            self._retry_later(inv, delay)
            return
        changes: dict[str, Any] = {
            "end_time": result.end_time,
            "attempts": list(inv.attempts),
            "logs_uri": result.logs_uri,
            "step_metadata": {**result.step_metadata, **({"hook_errors": result.hook_errors} if result.hook_errors else {})},
        }
        if result.ok:
            try:
                produced = self._store_outputs(inv, result)
            except Exception as exc:
                result = StepResult(ok=False, error=describe_error(exc), exception=exc)
            else:
                inv.outputs = produced
                if inv.cache_key:
                    self.stores.cache_memo[inv.cache_key] = (inv.step_run_id, produced)
                store.update_step_run(inv.step_run_id, status=S.COMPLETED.value, **changes)
                self._finish(inv, S.COMPLETED)
                return
        inv.error = result.error
        inv.exception = result.exception
        store.update_step_run(inv.step_run_id, status=S.FAILED.value, error=result.error, **changes)
        self._finish(inv, S.FAILED)

    def _retry_later(self, inv: Invocation, delay: float) -> None:
        def again() -> None:
            if inv.finished:
                return
            with self.lock:
                self.running -= 1
                self.ready.appendleft(inv)
            self._pump(run_here=None)

        if delay <= 0:
            again()
            return
        timer = threading.Timer(delay, again)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def _store_outputs(self, inv: Invocation, result: StepResult) -> dict[str, Produced]:
        produced: dict[str, Produced] = {}
        links = []
        now = time.time()
        store = self.stores.metadata
        for spec in inv.step.outputs:
            rec = result.outputs[spec.name]
            av = Produced(
                id=new_id(), name=self._artifact_name(inv, spec), uri=rec.uri,
                materializer=rec.materializer, data_type=rec.data_type,
                content_hash=rec.content_hash, size=rec.size, item_count=rec.item_count,
                producer_step_run_id=inv.step_run_id,
            )
            meta = dict(rec.metadata)
            if spec.run_metadata:
                meta.update(spec.run_metadata)
            store.insert_artifact_version(
                {
                    "id": av.id, "name": av.name, "uri": av.uri, "data_type": av.data_type,
                    "materializer": av.materializer, "content_hash": av.content_hash,
                    "size": av.size, "item_count": av.item_count,
                    "producer_step_run_id": inv.step_run_id, "run_id": self.id,
                    "tags": list(spec.tags), "artifact_metadata": meta, "created_at": now,
                },
                av,
            )
            links.append(_link(inv, av, "output", spec.name))
            produced[spec.name] = av
        store.insert_links(links)
        return produced

    def _finish(self, inv: Invocation, status: ExecutionStatus, reused: bool = False) -> None:
        """Mark finished, release its slot, and move its dependents on (iteratively)."""
        unrunnable: list[tuple[Invocation, Invocation]] = []
        stop_reason = None
        with self.lock:
            if inv.finished:
                return
            inv.status = status
            inv.finished = True
            if inv.start_time is not None:
                self.running -= 1
            for dep in inv.dependents:
                if dep.finished:
                    continue
                if inv.ok:
                    dep.waiting -= 1
                    if dep.waiting == 0:
                        self.ready.append(dep)
                else:
                    unrunnable.append((dep, inv))
            inv.dependents = []
            if status == S.FAILED:
                self.failed.append(inv)
                if self.config.execution_mode != ExecutionMode.CONTINUE_ON_FAILURE and self.stopping is None:
                    stop_reason = f"step {inv.id!r} failed, execution mode {self.config.execution_mode.value}"
                    self.stopping = stop_reason  # before anyone waiting on this step wakes up
            self.unfinished -= 1
            if self.unfinished == 0:
                self.all_done.notify_all()
        inv.event.set()
        if not reused or events.active:
            self._emit_step(inv)
        for dep, up in unrunnable:
            self._finish_unrun(dep, *self._unrunnable_because(up))
        if stop_reason is not None:
            self._stop_everything(stop_reason)

    def _finish_unrun(self, inv: Invocation, status: ExecutionStatus, reason: str) -> None:
        """Record an invocation that never ran (skipped or stopped), and its dependents."""
        work = [(inv, status, reason)]
        while work:
            current, st, why = work.pop()
            if current.finished:
                continue
            current.skip_reason = why
            current.error = {"type": st.value, "message": why}
            self._record_step(current, st, error=current.error, end_time=time.time())
            with self.lock:
                if current.finished:
                    continue
                current.status = st
                current.finished = True
                deps, current.dependents = current.dependents, []
                self.unfinished -= 1
                if self.unfinished == 0:
                    self.all_done.notify_all()
            current.event.set()
            self._emit_step(current)
            for dep in deps:
                work.append((dep, S.SKIPPED, f"upstream step {current.id!r} {st.value}"))

    def _emit_step(self, inv: Invocation) -> None:
        if events.active:
            events.emit(
                Event("step", self.id, inv.status, invocation_id=inv.id, step_name=inv.step.name,
                      step_run_id=inv.step_run_id, detail=(inv.error or {}).get("message"))
            )


def load_previous(stores: Stores, run_id: str) -> PreviousRun:
    """Read what an earlier execution of ``run_id`` recorded (for resume)."""
    stores.metadata.flush()
    run, rows, outputs, children = _queries.run_record(stores.metadata, run_id)
    produced: dict[str, dict[str, Produced]] = {}
    for o in outputs:
        produced.setdefault(o["step_run_id"], {})[o["output_name"]] = Produced(
            id=o["id"], name=o["name"], uri=o["uri"], materializer=o["materializer"],
            data_type=o["data_type"], content_hash=o["content_hash"], size=o["size"],
            item_count=o["item_count"], producer_step_run_id=o["producer_step_run_id"], version=o["version"],
        )
    return PreviousRun(
        run_id=run_id,
        name=run["name"],
        steps={r["invocation_id"]: (dict(r), produced.get(r["id"], {})) for r in rows},
        children={inv_id: cid for inv_id, cid in children},
        substitutions=dict((run["config"] or {}).get("resolved_substitutions") or {}),
    )


# -- entry point -------------------------------------------------------------------------------------------

def bind_parameters(pipeline: Pipeline[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    sig = pipeline.signature
    merged = {**{k: v for k, v in pipeline.config.parameters.items() if k in sig.parameters}, **kwargs}
    unknown = set(pipeline.config.parameters) - set(sig.parameters)
    if unknown:
        raise StepInputError(
            f"pipeline {pipeline.name!r} has no parameter(s) {sorted(unknown)}; its signature is "
            f"{pipeline.name}{sig}"
        )
    try:
        bound = sig.bind(*args, **merged)
    except TypeError as exc:
        raise StepInputError(
            f"pipeline {pipeline.name!r} called with wrong arguments: {exc}. Its signature is {pipeline.name}{sig}"
        ) from None
    bound.apply_defaults()
    params = dict(bound.arguments)
    _json_check(f"pipeline {pipeline.name!r}", params)
    return params


def run_pipeline(pipeline: Pipeline[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a pipeline from outside any pipeline body and return its stored PipelineRun."""
    if in_step():
        raise PipelineError(f"pipeline {pipeline.name!r} cannot be run inside a step")
    params = bind_parameters(pipeline, args, kwargs)
    stores = open_stores()
    run = Run(pipeline, params, stores)
    with console_progress(run):
        run.execute()
    return run.reader().get_pipeline_run(run.id)
