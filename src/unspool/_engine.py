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

Where each part lives
---------------------
``_engine.py``      :class:`Run`: the lifecycle (run row, hooks, final status), the body
                    API (``call_step``, ``map_step``, child runs) and stopping.
``_invocation.py``  :class:`Invocation` (one step call) and :class:`PreviousRun` (resume).
``_binding.py``     which arguments are parameters and which artifact inputs; ``map``.
``_scheduler.py``   ``waiting``/``ready``/``running`` as plain data, no SQL: which
                    invocation starts next and how many may run (its docstring explains it).
``_dispatch.py``    the loop around the scheduler: start (cache, resume reuse, spec),
                    hand to an executor, retry, finish, skip and stop.
``_recorder.py``    the one place a status transition is written (row, lineage, artifact
                    versions) and announced (event).
``_cache.py``       cache keys, cache hits, reuse of an earlier execution on resume.
``_budget.py``      budget checks and accounting.

When an invocation finishes, its dependents' counts drop; those reaching zero join
``ready``. If it failed, its dependents are *skipped* (their inputs will never exist),
and under ``FAIL_FAST``/``STOP_ON_FAILURE`` everything not yet started is *stopped*
(isolated steps still queued in their executor included). Starting an invocation first
computes its cache key: a hit finishes it at once as ``cached``; a miss records it
``running`` and hands a :class:`StepSpec` to its executor (``_executors.py``: a future of
the step result; the executor owns the step's timeout). When a step finishes, every
successor it made ready starts while slots are free; the thread that finished it runs one
of them itself (a chain runs without thread hand-offs), and a synchronous call in a
dynamic body runs its step in the body's own thread when a slot is free.

Failure modes: a step that raises is ``failed`` (after its retries) and its dependents
``skipped``; a step that cannot even start (its cache lookup or spec raises) is
``failed`` too, never left hanging; the body raising stops the run (``failed``, or
``stopped`` on Ctrl-C); a child run that fails fails its parent unless the body handled
it. Whatever happens, the run records a true final status.

All metadata goes through the buffered :class:`MetadataStore` writer. A finished step's
completion waits in its buffer until something is about to use the result (the body's
``wait``, a downstream step's start): that caller commits it first (``durable``), so a
result anything has seen survives a crash, and completions nobody looked at yet share one
commit. A run is owned by one process (``_ownership.py``): a resume claims it, and every
flush checks the claim still holds. A store that refuses writes for good stops the run.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import os
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from . import _budget, _cache, _queries
from ._artifact_io import load_artifact, ref_to
from ._binding import bind_each, bind_parameters, bind_step, map_combinations
from ._config import check_compiled_steps
from ._context import enter_run, in_step, leave_run
from ._dispatch import Dispatch
from ._errors import (
    PipelineError,
    RunFailedError,
    RunOwnershipLostError,
    StepDefinitionError,
    StepFailedError,
)
from ._futures import (
    ArtifactFuture,
    ChildRunFuture,
    MapResultFuture,
    StepRunFuture,
)
from ._ids import new_id
from ._invocation import Invocation, PreviousRun, Substitutions
from ._loading import pipeline_source
from ._models import StoreReader
from ._outcome import unhandled_children, unhandled_steps
from ._ownership import claim_run, new_owner, orchestrator_of
from ._progress import console_progress
from ._runner import (
    call_hook,
    describe_error,
)
from ._stores import Stores, open_stores
from ._types import EncodedJSON, ExecutionMode, ExecutionStatus, Produced

if TYPE_CHECKING:
    from ._config import PipelineConfig
    from ._pipeline import Pipeline
    from ._step import Step

S = ExecutionStatus
DEFAULT_PARALLELISM = 16
_CPUS = os.cpu_count() or 1

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
        self.substitutions = Substitutions(
            {"date": now.strftime("%Y_%m_%d"), "time": now.strftime("%H_%M_%S_%f")}
        )
        if previous is not None:
            self.substitutions.update(previous.substitutions)
        self.substitutions.update(self.config.substitutions)
        self.name = previous.name if previous else run_name(self.config, self.substitutions)
        self.invocations: dict[str, Invocation] = {}
        self._counters: dict[str, int] = {}
        self.compiling = False
        self._recorded: list[Invocation] = []
        budget = self.config.budget
        parallelism = self.config.max_parallelism or DEFAULT_PARALLELISM
        orchestrator = self.config.orchestrator or {}
        if orchestrator.get("type", "local") == "local" and orchestrator.get("enable_parallel") is False:
            parallelism = 1
        if budget and budget.max_parallelism:
            parallelism = min(parallelism, int(budget.max_parallelism))
        self.dispatch = Dispatch(self, parallelism)
        self.scheduler = self.dispatch.scheduler
        self.recorder = self.dispatch.recorder
        self.lock = self.scheduler.lock
        self.stopping: str | None = None
        self.aborted = False  # the body raised: nothing new starts, whatever the mode
        self.failed: list[Invocation] = []
        self.steps_used = 0
        self.children: list[Run] = []
        self.failed_children: list[Run] = []
        self.handled = False  # a failure of this (child) run was given to the parent body
        self.done = threading.Event()
        self.outcome: BaseException | None = None
        self.result: Any = None
        self.thread: threading.Thread | None = None
        self.owner: str | None = None  # the claim this process holds (_ownership.py); the root's for a child
        self.lost: str | None = None  # why another process took the run over, once it did

    def reader(self) -> StoreReader:
        """Read access to what this run recorded (its stores)."""
        return StoreReader(self.stores)

    # -- lifecycle -------------------------------------------------------------------------------------
    def execute(self) -> Any:
        """Run the pipeline to the end; record a true final status whatever happens."""
        store = self.stores.metadata
        record_start(self)
        if self.parent is None:
            store.clear_failure()  # an earlier run's; this run's first flush tells whether it lasts
        stop_listening = store.on_failure(self._store_failed)
        try:
            store.beat(self.id)
            store.flush()  # a run exists durably before any of its steps runs
            self.stores.artifacts.makedirs(self.stores.artifacts.join(self.id))
            self.recorder.run(S.INITIALIZING)
        except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised
            stop_listening()
            record_setup_failure(self, exc)
            raise
        try:
            return self._execute_body()
        finally:
            stop_listening()

    def _store_failed(self, error: BaseException) -> None:
        """The metadata store refused a write for good: nothing more can be recorded, so
        nothing more starts (the run ends with the store's error, see ``_execute_body``)."""
        self.aborted = True
        self.stop_everything(f"the metadata store refused a write ({error})")

    def _execute_body(self) -> Any:
        store = self.stores.metadata
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
            self.stop_everything(f"the pipeline body raised {type(exc).__name__}")
            self._wait_all()
        finally:
            leave_run(token)
            self.dispatch.shutdown()
        if self.lost is not None:  # the new owner finishes the run: no hook, nothing recorded
            store.unbeat(self.id)
            raise RunOwnershipLostError(self.lost)
        status, error = final_status(self, body_error)
        if store.failure is not None:  # raised by the flush below, after the hooks
            status, error = S.FAILED, {"type": "StoreError", "message": str(store.failure), "failed_steps": []}
        if status == S.FAILED:
            self._hook(self.config.on_failure, body_error or RunFailedError(error["message"]))
        else:
            self._hook(self.config.on_success)
        self._hook(self.config.on_cleanup)
        store.unbeat(self.id)
        self.recorder.run(status, detail=error["message"] if error else None, end_time=time.time(),
                          error=error, run_metadata=_budget.run_metadata(self))
        store.flush()
        if self.parent is None:
            store.disown(self.id)
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
        self.recorder.run(S.RUNNING)

    def status_counts(self) -> dict[str, int]:
        """How many of this run's invocations are in each status."""
        counts: dict[str, int] = {}
        for inv in list(self.invocations.values()):
            counts[inv.status.value] = counts.get(inv.status.value, 0) + 1
        return counts

    def budget_remaining(self) -> dict[str, Any] | None:
        return _budget.remaining(self)

    def _hook(self, hook: Callable[..., Any] | None, exc: BaseException | None = None) -> None:
        if hook is None:
            return
        try:
            call_hook(hook, exc)
        except Exception as hook_exc:
            import sys

            print(f"unspool: pipeline hook {getattr(hook, '__name__', hook)!r} raised {hook_exc!r}", file=sys.stderr)
            self.recorder.run(None, error={"hook_error": describe_error(hook_exc)})

    def _wait_all(self) -> None:
        self.scheduler.wait_all()

    def stop_everything(self, reason: str) -> None:
        with self.lock:
            if self.stopping is None:
                self.stopping = reason
            reason = self.stopping
            victims = [inv for inv in self.invocations.values() if not inv.finished and inv.start_time is None]
            self.scheduler.ready.clear()
        for inv in victims:
            self.dispatch.finish_unrun(inv, S.STOPPED, reason)
        if self.dispatch.extra_executors:
            self.dispatch.stop_isolated(reason, kill=self.config.execution_mode == ExecutionMode.FAIL_FAST)

    # -- body API ---------------------------------------------------------------------------------------
    def ensure_not_compiling(self, what: str, invocation_id: str) -> None:
        if self.compiling:
            raise PipelineError(
                f"cannot {what} the output of {invocation_id!r} while compiling static pipeline "
                f"{self.config.name!r}: data exists only at run time. Pass the output to the next "
                "step directly, or use @pipeline(dynamic=True) for data-dependent control flow"
            )

    def load_produced(self, produced: Produced, item_index: int | None = None) -> Any:
        return load_artifact(self.stores.artifacts, ref_to(produced, item_index))

    def version_of(self, produced: Produced) -> int:
        if produced.version is None:
            self.stores.metadata.flush()
        return produced.version  # type: ignore[return-value]

    def root(self) -> Run:
        run = self
        while run.parent is not None:
            run = run.parent
        return run

    def call_step(self, step: Step[Any], args: tuple[Any, ...], kwargs: dict[str, Any], mode: str) -> Any:
        _budget.check(self, 1)
        configured = self._configure(step)
        check_output_names(self, configured)
        params, inputs = bind_step(configured, args, kwargs)
        inv = self._new_invocation(configured, params, inputs)
        _budget.count_steps(self, 1)
        if self.compiling:
            self._recorded.append(inv)
            return inv.output_futures() if mode == "sync" else StepRunFuture(inv)
        self.dispatch.record_initializing(inv)
        self.dispatch.schedule(inv)
        if mode != "sync":
            self.dispatch.pump(run_here=None)
            return StepRunFuture(inv)
        self.dispatch.pump(run_here=inv)
        inv.wait()
        return inv.output_futures()

    def map_step(self, step: Step[Any], args: tuple[Any, ...], kwargs: dict[str, Any], product: bool) -> MapResultFuture:
        if self.compiling:
            raise PipelineError(
                f"{step.name}.{'product' if product else 'map'}() needs the length of its inputs, "
                "which exists only at run time; use @pipeline(dynamic=True)"
            )
        configured = self._configure(step)
        check_output_names(self, configured)
        fixed, combos = map_combinations(configured, args, kwargs, product)
        _budget.check(self, len(combos), fan_out=len(combos))
        futures = []
        invs = []
        for params, inputs in bind_each(configured, fixed, combos):
            inv = self._new_invocation(configured, params, inputs)
            if invs and inv.upstream == invs[-1].upstream:  # elements of one map: one list
                inv.upstream = invs[-1].upstream
            invs.append(inv)
            futures.append(StepRunFuture(inv))
        _budget.count_steps(self, len(invs))
        marked = EncodedJSON({**configured.config.recorded(), "map": invs[0].id}) if invs else None  # group marker
        for inv in invs:
            inv.config = marked  # one map call's members share it: the dashboard folds them by it
        self.dispatch.record_initializing_many(invs)
        for inv in invs:
            self.dispatch.schedule(inv)
        self.dispatch.pump(run_here=None)
        return MapResultFuture(futures, [spec.name for spec in configured.outputs])

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
        _budget.check_depth(self)
        _budget.check(self, 0)
        params = bind_parameters(pipeline, args, kwargs)
        with self.lock:
            key = f"pipeline:{pipeline.name}"
            n = self._counters.get(key, 0) + 1
            self._counters[key] = n
            invocation_id = key if n == 1 else f"{key}_{n}"
        previous = None
        if self.previous is not None and invocation_id in self.previous.children:
            previous = _cache.load_previous(self.stores, self.previous.children[invocation_id])
        child = Run(pipeline, params, self.stores, parent=self, invocation_id=invocation_id, previous=previous)
        self.children.append(child)
        if mode == "sync":
            try:
                return child.execute_as_child()
            except BaseException:
                child.handled = True  # the body gets the child's failure now
                raise
        self.scheduler.add()

        def run_child() -> None:
            try:
                child.execute_as_child()
            except BaseException:  # noqa: BLE001 - kept on the child, raised by result()
                pass
            finally:
                self.scheduler.done()

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

    def order_after(self, later: StepRunFuture, earlier: StepRunFuture) -> None:
        """Make ``later`` start only after ``earlier`` finished, without passing data (static
        bodies, while they compile: declarative pipelines run their tasks in list order)."""
        if not self.compiling:
            raise PipelineError("order_after() orders the steps of a static pipeline while it compiles")
        if earlier._inv not in later._inv.upstream:
            later._inv.upstream.append(earlier._inv)

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
            if params:  # else it keeps the shared empty one (a mapped step often has none)
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
            self.scheduler.add()
        return inv

    def _release_recorded(self) -> None:
        invs, self._recorded = self._recorded, []
        _budget.check(self, 0)
        dag = {
            "nodes": [{"id": inv.id, "step": inv.step.name} for inv in invs],
            "edges": [[up.id, inv.id] for inv in invs for up in inv.upstream],
        }
        self.recorder.run(None, dag=dag)
        for inv in invs:
            self.dispatch.record_initializing(inv)
        for inv in invs:
            self.dispatch.schedule(inv)
        self.dispatch.pump(run_here=None)

def check_output_names(run: Run, step: Step[Any]) -> None:
    """Parse outputs and fill name placeholders at the call, so a bad one fails there."""
    if any(spec.artifact_name and "{" in spec.artifact_name for spec in step.outputs):
        probe = Invocation(run, step.name, step, -1)
        for spec in step.outputs:
            run.dispatch.artifact_name(probe, spec)


def record_start(run: Run) -> None:
    """The run row as a run starts: a resumed root run is claimed (unless ``resume_run`` did),
    a new run inserted with a new owner (a new id: inserting it is the claim), and a child
    run recorded under its root run's owner."""
    store = run.stores.metadata
    store.add_pipeline(run.config.name)
    if run.parent is not None:
        run.owner = run.parent.owner  # a child run is owned with its root run
    elif run.previous is not None:
        if run.owner is None:
            claim(run)
    else:
        run.owner = new_owner()
        store.own(run.id, run.owner, partial(lose, run))  # a new id: inserting it is the claim
    assert run.owner is not None
    orchestrator = orchestrator_of(run.owner)
    if run.previous is not None and run.parent is not None:
        store.update_run(
            run.id, status=S.INITIALIZING.value, end_time=None, error=None, orchestrator=orchestrator,
            heartbeat=time.time(), config=recorded_config(run), owner=run.owner,
        )
    elif run.previous is None:
        # A chosen name can repeat (the default has {time}); a duplicate would fail the
        # flush and stay buffered, failing every later flush.
        if run.config.run_name and _queries.run_name_taken(store, run.name):
            store.disown(run.id)
            raise PipelineError(
                f"a run named {run.name!r} already exists and run names are unique; put "
                "{time} (or another changing substitution) in run_name, or choose another name"
            )
        store.insert_run(new_run_row(run, orchestrator))


def claim(run: Run) -> None:
    """Take a resumed root run for this process, atomically (``_ownership.claim_run``):
    RunClaimedError, with nothing written, when another live process owns it."""
    owner = new_owner()
    claim_run(run.stores.metadata, run.id, owner, status=S.INITIALIZING.value, end_time=None, error=None,
              orchestrator=orchestrator_of(owner), heartbeat=time.time(), config=recorded_config(run))
    run.owner = owner
    run.stores.metadata.own(run.id, owner, partial(lose, run))


def lose(run: Run, reason: str) -> None:
    """Another process claimed the run (the flush found out and writes nothing more): start
    nothing new and kill isolated steps; ``Run.execute`` then raises RunOwnershipLostError."""
    run.lost = reason
    run.aborted = True
    for each in [run, *run.children]:
        each.stop_everything(reason)
        if each.dispatch.extra_executors:
            each.dispatch.stop_isolated(reason, kill=True)


def new_run_row(run: Run, orchestrator: str) -> dict[str, Any]:
    """The row of a run that starts for the first time."""
    return {
        "id": run.id,
        "name": run.name,
        "pipeline_name": run.config.name,
        "status": S.INITIALIZING.value,
        "dynamic": run.config.dynamic,
        "parent_run_id": run.parent.id if run.parent else None,
        "invocation_id": run.invocation_id,
        "parameters": run.parameters,
        "config": recorded_config(run),
        "dag": None,
        "error": None,
        "run_metadata": {},
        "orchestrator": orchestrator,
        "owner": run.owner,
        "heartbeat": time.time(),
        "start_time": run.started,
        "end_time": None,
        "created_at": run.started,
    }


def record_setup_failure(run: Run, exc: BaseException) -> None:
    """The run could not even start (an artifact folder it cannot create, a child pipeline
    recursing without end): record it failed at once and stop its heartbeat, so it never
    stays ``initializing`` for as long as the process lives. Best effort: the store may be
    what failed."""
    store = run.stores.metadata
    error = {**describe_error(exc), "message": f"the run could not start: {type(exc).__name__}: {exc}",
             "failed_steps": []}
    try:
        store.unbeat(run.id)
        run.recorder.run(S.FAILED, detail=error["message"], end_time=time.time(), error=error)
        store.flush()
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass
    if run.parent is None:
        store.disown(run.id)


def run_name(config: PipelineConfig, substitutions: Substitutions) -> str:
    """The name of a new run: ``run_name`` (default ``{pipeline}-{date}-{time}``) filled in."""
    template = config.run_name or "{pipeline}-{date}-{time}"
    values = Substitutions(substitutions, pipeline=config.name)
    try:
        return template.format_map(values)
    except KeyError as exc:
        raise StepDefinitionError(
            f"run name {template!r} uses {{{exc.args[0]}}}, which no substitution defines"
        ) from None


def recorded_config(run: Run) -> dict[str, Any]:
    """What a run records as its configuration: the pipeline's (``_config.recorded_options``),
    where the pipeline is defined, and the built-in substitutions it started with."""
    return {
        **run.config.recorded(),
        "source": pipeline_source(run.pipeline),
        "resolved_substitutions": {k: run.substitutions[k] for k in ("date", "time")},
    }


def final_status(run: Run, body_error: BaseException | None) -> tuple[ExecutionStatus, dict[str, Any] | None]:
    """The status a run ends in, and its error: the body's exception, failed steps or children."""
    failed_ids = [inv.id for inv in run.failed]
    if body_error is None:
        failed_ids = [inv.id for inv in unhandled_steps(run)]
    if body_error is not None:
        err = describe_error(body_error)
        err["failed_steps"] = failed_ids
        if isinstance(body_error, StepFailedError):
            err["message"] = f"{body_error}"
        if isinstance(body_error, KeyboardInterrupt):
            err["message"] = "interrupted (KeyboardInterrupt)"
            return S.STOPPED, err
        return S.FAILED, err
    failed_children = unhandled_children(run)
    if failed_children and not failed_ids:
        names = ", ".join(c.invocation_id or c.id for c in failed_children)
        return S.FAILED, {"message": f"child run(s) failed: {names}", "failed_steps": [],
                          "failed_children": [c.id for c in failed_children]}
    if failed_ids:
        shown = ", ".join(failed_ids[:10]) + (f" and {len(failed_ids) - 10} more" if len(failed_ids) > 10 else "")
        return S.FAILED, {"message": f"step(s) failed: {shown}", "failed_steps": failed_ids}
    return S.COMPLETED, None


# -- entry point -------------------------------------------------------------------------------------------

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
