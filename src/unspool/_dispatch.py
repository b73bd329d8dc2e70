"""Starting, running and finishing the invocations of one run.

:class:`Dispatch` is the engine's loop around the :class:`~unspool._scheduler.Scheduler`:

* ``schedule`` makes a new invocation wait for its upstreams or puts it on ``ready``;
* ``pump`` claims every ready invocation while slots are free and starts each: cache key,
  resume reuse or cache hit (finished at once), else recorded ``running`` and handed to its
  executor as a :class:`StepSpec`. A thread that may run a step itself (a worker that just
  finished one, a synchronous call in a body) runs one of them after handing the others
  out, so a chain runs without thread hand-offs and its siblings do not wait for it;
* when a result comes back (``record_result``) a failed attempt may be retried; otherwise
  the outcome is recorded and ``finish`` frees the slot and moves the dependents on (a
  failure skips them and, depending on the execution mode, stops the run);
* ``stop_isolated`` cancels isolated steps still queued in their executor (and kills running
  ones under FAIL_FAST).

Every write and event goes through the run's :class:`~unspool._recorder.Recorder`; where a
step runs is the executors' business (``_executors.py``).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from . import _cache, _spend
from ._artifact_io import ArtifactRef, ref_to
from ._errors import StepDefinitionError
from ._executors import Executor, ThreadExecutor, executor_kind, open_executor
from ._futures import ArtifactFuture
from ._invocation import Invocation, Substitutions, input_links, link
from ._recorder import NO_METADATA, Recorder
from ._runner import OutputTarget, StepResult, StepSpec, describe_error, run_step
from ._scheduler import NO_DEPENDENTS, Scheduler
from ._types import ExecutionMode, ExecutionStatus, Produced

if TYPE_CHECKING:
    from ._engine import Run

S = ExecutionStatus
MAP_FLUSH_ROWS = 20_000


class Dispatch:
    """The invocations of one run on their way through scheduler, executors and recorder."""

    def __init__(self, run: Run, parallelism: int) -> None:
        self.run = run
        self.scheduler = Scheduler(parallelism)
        self.recorder = Recorder(run.id, run.config.name, run.stores.metadata, self.artifact_name)
        self.executor: Executor = ThreadExecutor(parallelism)
        self.extra_executors: dict[str, Executor] = {}  # "process"/"ray", made on first use
        self._executor_lock = threading.Lock()
        self.timers: list[threading.Timer] = []  # retry delays

    def shutdown(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.executor.shutdown()
        for executor in self.extra_executors.values():
            executor.shutdown()

    def stop_isolated(self, reason: str, kill: bool) -> None:
        """Isolated steps still queued in their executor never start; with ``kill`` (FAIL_FAST)
        running ones are killed too. Either way they are recorded as stopped."""
        with self.run.lock:
            submitted = [
                inv for inv in self.run.invocations.values()
                if not inv.finished and inv.future is not None and not self.executor_for(inv).in_process
            ]
        for inv in submitted:
            with self.run.lock:
                future = inv.future
                if inv.finished or future is None:
                    continue  # finished, or its result is being recorded (``submit``'s ``done``)
                if kill:
                    inv.future = None  # what its killed worker reports is not recorded: the stop is
            if not self.executor_for(inv).cancel(future, reason, running=kill):
                if not kill:
                    continue  # it started before the stop: it finishes (STOP_ON_FAILURE)
                what = "killed while running"
            else:
                what = "not started"
            with self.run.lock:
                if inv.finished:
                    continue  # it finished on its own meanwhile
                inv.skip_reason = f"{what}: {reason}"
                inv.error = {"type": S.STOPPED.value, "message": inv.skip_reason}
                self.finish(inv, S.STOPPED)  # recorded just below, outside the lock
            now = time.time()
            inv.attempts = [*inv.attempts, {"attempt": inv.attempt, "status": S.STOPPED.value,
                                            "start_time": inv.start_time, "end_time": now, "error": inv.error}]
            self.recorder.step(inv, S.STOPPED, error=inv.error, end_time=now, attempts=list(inv.attempts))

    def schedule(self, inv: Invocation) -> None:
        """Put an invocation on ``ready``, or make it wait for its upstream invocations."""
        with self.run.lock:
            if inv.finished:
                return
            stopped = self.run.stopping is not None and self.run.config.execution_mode != ExecutionMode.CONTINUE_ON_FAILURE
            blocked_by = inv if stopped else self.scheduler.schedule(inv)
        if blocked_by is inv:
            self.finish_unrun(inv, S.STOPPED, f"the run is stopping ({self.run.stopping})")
        elif blocked_by is not None:
            self.finish_unrun(inv, *self.unrunnable_because(blocked_by))

    def halted(self) -> bool:
        """True once a failure stopped the run: nothing new may start."""
        return self.run.stopping is not None and (
            self.run.aborted or self.run.config.execution_mode != ExecutionMode.CONTINUE_ON_FAILURE
        )

    def unrunnable_because(self, up: Invocation) -> tuple[ExecutionStatus, str]:
        return S.SKIPPED, f"upstream step {up.id!r} {up.status.value}"

    def pump(self, run_here: Invocation | bool | None) -> None:
        """Start every ready invocation while slots are free.

        ``run_here=True`` lets this thread run one of them itself (a worker continuing a
        chain), after handing the others to their executors; an :class:`Invocation` lets it
        run only that one (a synchronous call in a body).
        """
        while True:
            with self.run.lock:
                claimed = [] if self.halted() else self.scheduler.claim(adaptive=not self.extra_executors)
            if not claimed:
                return
            local: tuple[Invocation, StepSpec] | None = None
            for inv in claimed:
                try:
                    spec = self.start(inv)
                except Exception as exc:  # an invocation left unfinished would hang the run
                    self.fail_to_start(inv, exc)
                    continue
                if spec is None:
                    continue
                here = run_here is True or run_here is inv
                if local is None and here and inv.step.config.timeout is None and self.executor_for(inv).in_process:
                    local = (inv, spec)
                else:
                    self.submit(inv, spec)
            if local is not None:
                inv, spec = local
                try:
                    self.record_result(inv, spec, run_step(spec))
                except Exception as exc:  # unspool's bookkeeping around the step: fail it, never hang
                    self.fail_to_start(inv, exc)
                if run_here is inv:
                    run_here = None

    def fail_to_start(self, inv: Invocation, exc: Exception) -> None:
        """Record an invocation whose start (cache key, spec) or whose bookkeeping after it ran
        (recording its result) raised as failed, freeing its slot: it always finishes."""
        if inv.finished:
            return
        inv.start_time = inv.start_time or time.time()
        inv.error, inv.exception = describe_error(exc), exc
        try:
            self.recorder.step(inv, S.FAILED, error=inv.error, start_time=inv.start_time, end_time=time.time())
        finally:
            self.finish(inv, S.FAILED)

    def submit(self, inv: Invocation, spec: StepSpec) -> None:
        attempt = inv.attempt

        def done(future: Future[StepResult]) -> None:
            result = future.result()
            with self.run.lock:
                if inv.finished or inv.attempt != attempt or not result.started or inv.future is not future:
                    return  # stopped meanwhile (the stop records it); this attempt's result is not wanted
                inv.future = None  # this result is recorded: a stop from now on leaves the step alone
            try:
                self.record_result(inv, spec, result)
            except Exception as exc:  # unspool's bookkeeping around the step: fail it, never hang
                self.fail_to_start(inv, exc)
            self.pump(run_here=True)

        future = inv.future = self.executor_for(inv).submit(spec)
        future.add_done_callback(done)

    def executor_for(self, inv: Invocation) -> Executor:
        """The thread pool, or for ``runtime="isolated"`` steps (every step under
        ``orchestrator: {type: process}`` or ``{type: ray, all_steps: true}``) the run's
        process or Ray executor, made on first use (see ``_executors.executor_kind``)."""
        kind = executor_kind(self.run.config.orchestrator, inv.step.config.runtime)
        if kind == "inline":
            return self.executor
        executor = self.extra_executors.get(kind)
        if executor is None:
            with self._executor_lock:
                executor = self.extra_executors.get(kind)
                if executor is None:
                    executor = self.extra_executors[kind] = open_executor(kind, self.run.config.orchestrator)
        return executor

    def start(self, inv: Invocation) -> StepSpec | None:
        """Cache lookup, then record the step run as running and build its spec."""
        step = inv.step
        enable_cache = step.config.enable_cache if step.config.enable_cache is not None else self.run.config.enable_cache
        refs: dict[str, tuple[bool, list[ArtifactRef]]] = {}
        input_ids: list[tuple[str, int, Produced, int | None]] = []
        seen = 0
        for name, (is_list, sources) in inv.inputs.items():
            lst = []
            for pos, (source, index) in enumerate(sources):
                if isinstance(source, ArtifactFuture):
                    seen = max(seen, source._inv.durable_at)
                    produced = source._inv.outputs[source.output_name]
                else:
                    produced = source
                lst.append(ref_to(produced, index))
                input_ids.append((name, pos, produced, index))
            refs[name] = (is_list, lst)
        if seen:
            self.run.stores.metadata.durable(seen)  # the upstream results it is about to use
        inv.cache_key = _cache.cache_key(inv, input_ids, [self.artifact_name(inv, o) for o in step.outputs])
        retrying = inv.status == S.RUNNING  # a retry: its step run and links are recorded already
        # The earlier execution is consulted once, at the first attempt (a retry that did it
        # again would reset the attempt count and retry forever).
        if self.run.previous is not None and not retrying and self.reuse_previous(inv):
            return None
        if enable_cache:
            hit = self.lookup_cache(inv.cache_key, inv.step.name)
            if hit is not None:
                self.record_cached(inv, input_ids, *hit)
                return None
        inv.start_time = time.time()
        inv.status = S.RUNNING
        if retrying:
            self.recorder.emit_step(inv, S.RUNNING)
        else:
            self.recorder.step(inv, S.RUNNING, links=input_links(inv, input_ids),
                               start_time=inv.start_time, cache_key=inv.cache_key)
        return step_spec(self.run, inv, refs)

    def record_initializing(self, inv: Invocation) -> None:
        """A new invocation is visible (waiting for inputs or a slot) before it starts. On
        resume, an id that ran before keeps its earlier row until reused or replaced."""
        if self.run.previous is not None and inv.id in self.run.previous.steps:
            return
        self.recorder.step(inv, S.INITIALIZING)

    def record_initializing_many(self, invs: list[Invocation]) -> None:
        """:meth:`record_initializing` for each of a map's invocations, flushing every
        ``MAP_FLUSH_ROWS``: a map of a million steps queued a million rows (about 1 KB
        each) in the writer's buffer at once."""
        for i, inv in enumerate(invs, 1):
            self.record_initializing(inv)
            if i % MAP_FLUSH_ROWS == 0:
                self.run.stores.metadata.flush()

    def reuse_previous(self, inv: Invocation) -> bool:
        """On resume: reuse the invocation's earlier step run if it succeeded on the same
        inputs; else the new attempt replaces it, keeping its attempts (see ``_cache``)."""
        found = _cache.earlier(self.run.stores, self.run.previous, inv)
        if found is None:
            return False
        row, outputs, reusable = found
        _spend.charge(self.run, inv.id, (row["step_metadata"] or {}).get("spend"))  # paid before, either way
        if reusable:
            inv.step_run_id = row["id"]
            inv.outputs = outputs
            inv.start_time = row["start_time"] or time.time()
            self.finish(inv, S(row["status"]))
            self.recorder.emit_step(inv, inv.status)
            return True
        self.recorder.forget(row["id"])
        inv.attempts = [{**a, "earlier_run_attempt": True} for a in row["attempts"] or []]
        inv.attempt = len(inv.attempts) + 1
        return False

    def lookup_cache(self, key: str, step_name: str) -> tuple[str, dict[str, Produced]] | None:
        return _cache.lookup(self.run.stores, key, step_name)

    def record_cached(self, inv: Invocation, input_ids: list[Any], original_id: str, outputs: dict[str, Produced]) -> None:
        now = time.time()
        inv.start_time = now
        inv.outputs = outputs
        links = input_links(inv, input_ids) + [link(inv, p, "output", name) for name, p in outputs.items()]
        self.recorder.step(inv, S.CACHED, links=links, original_step_run_id=original_id,
                           cache_key=inv.cache_key, start_time=now, end_time=now)
        self.finish(inv, S.CACHED)
        inv.release()

    def artifact_name(self, inv: Invocation, spec: Any) -> str:
        template = spec.artifact_name or f"{self.run.config.name}::{inv.step.name}::{spec.name}"
        if "{" not in template:
            return template
        values = Substitutions(self.run.substitutions)
        values.update(inv.step.config.substitutions)
        try:
            return template.format_map(values)
        except KeyError as exc:
            raise StepDefinitionError(
                f"artifact name {template!r} of step {inv.step.name!r} uses {{{exc.args[0]}}}, which "
                "no substitution defines; add it to @step(substitutions=...) or "
                "@pipeline(substitutions=...)"
            ) from None

    def record_result(self, inv: Invocation, spec: StepSpec, result: StepResult) -> None:
        if self.executor_for(inv).in_process:
            self.scheduler.learn(result)
        attempt_record = {
            "attempt": inv.attempt,
            "status": "completed" if result.ok else "stopped" if result.interrupted else "failed",
            "start_time": result.start_time,
            "end_time": result.end_time,
            "error": None if result.ok else {k: v for k, v in (result.error or {}).items() if k != "traceback"},
        }
        inv.attempts = [*inv.attempts, attempt_record]
        spent = _spend.charge(self.run, inv.id, result.spend)
        retry = inv.step.config.retry or self.run.config.retry
        if (not result.ok and retry is not None and inv.attempt <= retry.max_retries and self.run.stopping is None
                and not result.interrupted):
            delay = retry.delay * (retry.backoff ** (inv.attempt - 1))
            inv.attempt += 1
            self.recorder.attempts(inv, attempts=list(inv.attempts), logs_uri=result.logs_uri)
            self.retry_later(inv, delay)
            return
        changes: dict[str, Any] = {
            "end_time": result.end_time,
            "attempts": list(inv.attempts),
            "logs_uri": result.logs_uri,
            "step_metadata": {**result.step_metadata, **({"hook_errors": result.hook_errors} if result.hook_errors else {}),
                              **({"spend": spent} if spent else {})} or NO_METADATA,
        }
        if result.ok:
            try:
                produced = self.recorder.step(inv, S.COMPLETED, outputs=result, **changes)
            except Exception as exc:
                result = StepResult(ok=False, error=describe_error(exc), exception=exc)
            else:
                inv.outputs = produced
                # Its completion is buffered; whoever uses the result first (the body through
                # ``Invocation.wait``, a downstream step in ``start``) commits it before
                # looking (``durable_at``), so a result anything has seen is never executed
                # again after a crash, and the results of a fan-out share one commit.
                inv.durable_at = self.run.stores.metadata.written
                if inv.cache_key:
                    self.run.stores.cache_memo[inv.cache_key] = (inv.step_run_id, produced)
                self.finish(inv, S.COMPLETED)
                inv.release()
                return
        inv.error = result.error
        inv.exception = result.exception
        status = S.STOPPED if result.interrupted else S.FAILED
        self.recorder.step(inv, status, error=result.error, **changes)
        self.finish(inv, status)

    def retry_later(self, inv: Invocation, delay: float) -> None:
        def again() -> None:
            if inv.finished:
                return
            with self.run.lock:
                self.scheduler.running -= 1
                self.scheduler.ready.appendleft(inv)
            self.pump(run_here=None)

        if delay <= 0:
            again()
            return
        timer = threading.Timer(delay, again)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def finish(self, inv: Invocation, status: ExecutionStatus) -> None:
        """Mark finished (its status is recorded already), free its slot and move its
        dependents on; a failure may stop the run."""
        stop_reason = None
        with self.run.lock:
            if inv.finished:
                return
            inv.status = status
            inv.finished = True
            unrunnable = self.scheduler.finish(inv)
            if status == S.FAILED:
                self.run.failed.append(inv)
                if self.run.config.execution_mode != ExecutionMode.CONTINUE_ON_FAILURE and self.run.stopping is None:
                    stop_reason = f"step {inv.id!r} failed, execution mode {self.run.config.execution_mode.value}"
                    self.run.stopping = stop_reason  # before anyone waiting on this step wakes up
            self.scheduler.done()
        inv.event.set()
        for dep in unrunnable:
            self.finish_unrun(dep, *self.unrunnable_because(inv))
        if stop_reason is not None:
            self.run.stop_everything(stop_reason)

    def finish_unrun(self, inv: Invocation, status: ExecutionStatus, reason: str) -> None:
        """Record an invocation that never ran (skipped or stopped), and its dependents."""
        work = [(inv, status, reason)]
        while work:
            current, st, why = work.pop()
            if current.finished:
                continue
            current.skip_reason = why
            current.error = {"type": st.value, "message": why}
            self.recorder.step(current, st, error=current.error, end_time=time.time())
            with self.run.lock:
                if current.finished:
                    continue
                current.status = st
                current.finished = True
                deps, current.dependents = current.dependents, NO_DEPENDENTS
                self.scheduler.done()
            current.event.set()
            for dep in deps:
                work.append((dep, S.SKIPPED, f"upstream step {current.id!r} {st.value}"))


def step_spec(run: Run, inv: Invocation, refs: dict[str, tuple[bool, list[ArtifactRef]]]) -> StepSpec:
    """What an executor needs to run ``inv``'s current attempt anywhere."""
    root = run.stores.artifacts
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
                root.location(run.id, inv.id, spec.name, inv.attempt),
                f"{override.__module__}:{override.__qualname__}" if override else None,
            )
        )
    return StepSpec(
        run_id=run.id,
        step_run_id=inv.step_run_id,
        invocation_id=inv.id,
        pipeline_name=run.config.name,
        step=inv.step,
        attempt=inv.attempt,
        parameters=inv.params,
        inputs=refs,
        outputs=outputs,
        artifact_store_url=run.stores.artifact_root,
        logs_uri=root.location(run.id, inv.id),
        budget_remaining=_spend.with_remaining(run, run.budget_remaining()),
    )
