"""Runs one step from a step spec and hands back a step result.

This is the boundary between the orchestrating process and wherever a step runs: a thread
of the orchestrator, another process, or a Ray worker. A :class:`StepSpec` carries
everything needed (the function, input artifact references, parameters, output targets,
store locations); a :class:`StepResult` carries everything the orchestrator records
(output artifact references and metadata, log location, error). The runner reads inputs
from and writes outputs to the artifact store itself; it never touches the metadata store.
"""

from __future__ import annotations

import inspect
import threading
import time
import traceback
import typing
import weakref
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Callable

from . import _logs
from ._artifact_io import ArtifactRef, artifact_store_for, load_artifact, type_path
from ._artifact_store import ArtifactStore, SaveTracker, TrackingArtifactStore, directory_digest
from ._context import INFERRED, StepContext, enter_step, leave_step
from ._errors import MaterializerError, StepOutputError, StoreError
from ._materializers import (
    BaseMaterializer,
    materializer_from_path,
    materializer_path,
    materializer_registry,
)
from ._step import Step, split_outputs


@dataclass
class OutputTarget:
    name: str
    uri: str
    materializer: str | None  # None: chosen from the returned value's type


@dataclass
class StepSpec:
    run_id: str
    step_run_id: str
    invocation_id: str
    pipeline_name: str
    step: Step[Any]
    attempt: int
    parameters: dict[str, Any]
    inputs: dict[str, tuple[bool, list[ArtifactRef]]]  # name -> (is_list, refs)
    outputs: list[OutputTarget]
    artifact_store_url: str
    logs_uri: str
    budget_remaining: dict[str, Any] | None = None
    echo_logs: bool = True


@dataclass
class OutputRecord:
    uri: str
    materializer: str
    data_type: str
    content_hash: str
    size: int
    item_count: int | None
    metadata: dict[str, Any]


@dataclass
class StepResult:
    ok: bool
    outputs: dict[str, OutputRecord] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    exception: BaseException | None = None  # only when the step ran in this process
    logs_uri: str | None = None
    start_time: float = 0.0
    end_time: float = 0.0
    step_metadata: dict[str, Any] = field(default_factory=dict)
    hook_errors: list[dict[str, Any]] = field(default_factory=list)
    cpu_time: float | None = None  # CPU seconds of the thread that ran it (in-process only)
    spend: dict[str, float] = field(default_factory=dict)  # charges (see _spend.py)
    interrupted: bool = False  # Ctrl-C (KeyboardInterrupt in a main thread): stopped, not failed
    started: bool = True  # False: cancelled before it started (whoever cancelled records it)


# -- saving --------------------------------------------------------------------------------------

def save_artifact(
    store: ArtifactStore, uri: str, value: Any, materializer_cls: type[BaseMaterializer]
) -> OutputRecord:
    staging = store.staging_dir(uri)
    tracker = SaveTracker()
    try:
        materializer = materializer_cls(staging, TrackingArtifactStore(store, tracker))
        materializer.save(value)
        metadata = materializer.extract_metadata(value) or {}
        item_count = materializer.item_count(value)
        trusted = materializer_cls.__module__ == BaseMaterializer.__module__  # writes only via store.open
        content_hash, size = directory_digest(store, staging, tracker, tracked_only=trusted)
        uri = store.commit_dir(staging, uri)  # on an object store: the unique key written
    except BaseException:
        store.remove(staging)
        raise
    return OutputRecord(
        uri=uri,
        materializer=materializer_path(getattr(materializer, "stored_with", materializer_cls)),
        data_type=type_path(type(value)),
        content_hash=content_hash,
        size=size,
        item_count=item_count,
        metadata=metadata,
    )


def _choose_materializer(step: Step[Any], output: str, target: OutputTarget, value: Any) -> type[BaseMaterializer]:
    if target.materializer:
        return materializer_from_path(target.materializer)
    return materializer_registry.for_type(type(value))


_hints: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _type_hints(func: Any) -> dict[str, Any]:
    """``typing.get_type_hints(func)``, resolved once per function.

    Resolving string annotations (``from __future__ import annotations``) compiles each one
    again on every call, which cost more than a trivial step's own work. Failures are not
    remembered: they raise again, as before.
    """
    try:
        return _hints[func]
    except KeyError:
        hints = _hints[func] = typing.get_type_hints(func)
        return hints
    except TypeError:  # a callable that cannot be weakly referenced
        return typing.get_type_hints(func)


def _input_annotation(step: Step[Any], name: str, is_list: bool) -> Any:
    param = step.signature.parameters.get(name)
    annotation = Any if param is None or param.annotation is param.empty else param.annotation
    if isinstance(annotation, str):
        try:
            annotation = _type_hints(step.func).get(name, Any)
        except Exception:
            annotation = Any
    if is_list:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return annotation


_PLAIN = (str, int, float, bool, bytes)
_NUMBERS = (int, float, bool)


def _check_input(step_name: str, name: str, annotation: Any, value: Any, ref: ArtifactRef) -> None:
    """An input artifact whose data is not of the annotated type is the step's input error."""
    from ._errors import StepInputError

    wanted = typing.get_origin(annotation) or annotation
    if wanted not in _PLAIN or type(value) not in _PLAIN:  # only plain scalars are checked here
        return
    if isinstance(value, wanted) or wanted in _NUMBERS and type(value) in _NUMBERS:
        return  # numbers pass between int and float unchanged (see load_artifact)
    stored = ref.data_type.rpartition(":")[2] or type(value).__name__
    raise StepInputError(
        f"input {name!r} of step {step_name!r} is annotated {wanted.__name__} but receives a "
        f"{type(value).__name__} artifact (stored as {stored}); pass an artifact of that type or change the annotation"
    )


# -- running ------------------------------------------------------------------------------------------

def run_step(spec: StepSpec, log_sink: Callable[[str], None] | None = None) -> StepResult:
    """Load inputs, call the step function with its output captured, save its outputs.

    Captured output is appended to ``spec.logs_uri`` at the end; with ``log_sink`` it goes
    to the sink as it is written instead (a worker process streams it to the log file, so
    output printed before a crash is kept) and the caller owns the log file.
    """
    store = artifact_store_for(spec.artifact_store_url)
    start = time.time()
    cpu_start = time.thread_time()
    ctx = StepContext(
        run_id=spec.run_id,
        step_run_id=spec.step_run_id,
        invocation_id=spec.invocation_id,
        step_name=spec.step.name,
        pipeline_name=spec.pipeline_name,
        attempt=spec.attempt,
        budget_remaining=spec.budget_remaining,
        run_reader=_read_run,
    )
    holder: dict[str, Any] = {}

    def body() -> None:
        token = enter_step(ctx)
        try:
            kwargs = dict(spec.parameters)
            for name, (is_list, refs) in spec.inputs.items():
                annotation = _input_annotation(spec.step, name, is_list)
                values = [load_artifact(store, ref, annotation) for ref in refs]
                for value, ref in zip(values, refs):
                    _check_input(spec.step.name, name, annotation, value, ref)
                kwargs[name] = values if is_list else values[0]
            value = spec.step.func(**kwargs)
            outputs = split_outputs(spec.step.name, spec.step.outputs, value)
            targets = {t.name: t for t in spec.outputs}
            records: dict[str, OutputRecord] = {}
            for name, item in outputs.items():
                target = targets[name]
                cls = _choose_materializer(spec.step, name, target, item)
                try:
                    record = save_artifact(store, target.uri, item, cls)
                except Exception as exc:  # MaterializerError too: add which step and output
                    raise MaterializerError(
                        f"step {spec.step.name!r} output {name!r} ({type(item).__name__}) could not "
                        f"be saved with {cls.__name__}: {exc}"
                    ) from exc
                record.metadata.update(ctx.artifact_metadata.get(name, {}))
                if INFERRED in ctx.artifact_metadata:
                    if len(outputs) != 1:
                        raise StepOutputError(
                            f"log_metadata(infer_artifact=True) in step {spec.step.name!r} needs one output, "
                            f"but it has {len(outputs)} ({', '.join(outputs)}); pass artifact_name= instead"
                        )
                    record.metadata.update(ctx.artifact_metadata[INFERRED])
                records[name] = record
            holder["outputs"] = records
            _run_hook(spec.step.config.on_success, None, holder)
        except BaseException as exc:
            _run_hook(spec.step.config.on_failure, exc, holder)
            raise
        finally:
            leave_step(token)

    _, error, text = _logs.capture(spec.invocation_id, body, sink=log_sink, key=_log_key(spec))
    result = StepResult(ok=error is None, start_time=start, end_time=time.time(),
                        cpu_time=time.thread_time() - cpu_start)
    result.step_metadata = ctx.step_metadata
    result.spend = ctx.spent
    result.hook_errors = holder.get("hook_errors", [])
    if error is None:
        result.outputs = holder["outputs"]
    else:
        result.exception = error
        result.error = describe_error(error)
        # SystemExit (sys.exit(), an argparse error) is the step's failure like any other;
        # only Ctrl-C reaching the thread that runs the body (or a worker's) stops the run.
        result.interrupted = isinstance(error, KeyboardInterrupt) and threading.current_thread() is threading.main_thread()
    if text:
        if log_sink is None:
            started = _log_key(spec) in _partly_written
            _partly_written.discard(_log_key(spec))
            header = "" if started else attempt_header(spec)
            try:
                store.append_text(spec.logs_uri, header + text)
            except Exception as exc:  # a full or broken store: the step fails, saying why
                failure = StoreError(
                    f"the log of step {spec.invocation_id!r} could not be written to "
                    f"{spec.logs_uri} ({type(exc).__name__}: {exc}); free space in, or fix, the "
                    "artifact store"
                )
                failure.__cause__ = exc
                result.ok, result.outputs, result.exception = False, {}, error or failure
                result.error = describe_error(error or failure)
                return result
        result.logs_uri = spec.logs_uri
    elif (log_sink is not None or spec.attempt > 1 or _log_key(spec) in _partly_written) and store.exists(spec.logs_uri):
        # an earlier attempt, a timeout or the worker wrote to the log already; a first
        # attempt that printed nothing has no log file (one file check less per step)
        result.logs_uri = spec.logs_uri
    return result


def _read_run(run_id: str) -> Any:
    """``get_step_context().pipeline_run``: the stored run, read in whatever process the step runs."""
    # lazy: the stores' read side (SQLAlchemy) loads only when a step asks for its run
    from ._models import StoreReader

    return StoreReader().get_pipeline_run(run_id)


def attempt_header(spec: StepSpec) -> str:
    """The line that opens a retry's part of a step's log (the first attempt has none)."""
    return f"--- attempt {spec.attempt} ---\n" if spec.attempt > 1 else ""


def _log_key(spec: StepSpec) -> str:
    return f"{spec.step_run_id}#{spec.attempt}"


_partly_written: set[str] = set()  # attempts whose log a timeout began writing


def timed_out_logs(spec: StepSpec) -> str | None:
    """The log of an attempt that timed out: what it printed so far is written now (its
    abandoned thread adds the rest when it ends); an isolated worker streamed its own."""
    store = artifact_store_for(spec.artifact_store_url)
    text = _logs.take_live(_log_key(spec))
    if text:
        header = attempt_header(spec)
        store.append_text(spec.logs_uri, header + text)
        _partly_written.add(_log_key(spec))
    if text is not None or store.exists(spec.logs_uri):
        return spec.logs_uri
    return None


def _run_hook(hook: Any, exc: BaseException | None, holder: dict[str, Any]) -> None:
    if hook is None:
        return
    try:
        call_hook(hook, exc)
    except Exception as hook_exc:  # a hook never masks the step's outcome
        print(f"hook {getattr(hook, '__name__', hook)!r} raised {hook_exc!r}", file=__import__("sys").stderr)
        holder.setdefault("hook_errors", []).append(
            {"hook": getattr(hook, "__name__", repr(hook)), **describe_error(hook_exc)}
        )


def call_hook(hook: Callable[..., Any], exc: BaseException | None) -> None:
    """Call a success hook with nothing, a failure hook with the exception if it takes one."""
    if exc is not None and inspect.signature(hook).parameters:
        hook(exc)
    else:
        hook()


# -- results that did not come from running the step (shared by every executor) -------------------------

def failed_result(exc: BaseException, prefix: str = "", *, start_time: float | None = None) -> StepResult:
    """A failed result for ``exc`` (raised by the machinery, not by the step)."""
    error = describe_error(exc)
    if prefix:
        error["message"] = prefix + error["message"]
    now = time.time()
    return StepResult(ok=False, error=error, exception=exc, start_time=start_time or now, end_time=now)


def timed_out_result(spec: StepSpec, timeout: float, consequence: str, start_time: float) -> StepResult:
    """The result of a step that did not finish within ``timeout`` seconds of its start."""
    exc = TimeoutError(
        f"step {spec.invocation_id!r} did not finish within its timeout of {timeout}s; {consequence}"
    )
    result = failed_result(exc, start_time=start_time)
    result.logs_uri = timed_out_logs(spec)  # what it printed so far is kept, not lost
    return result


def not_started_result(spec: StepSpec, reason: str) -> StepResult:
    """The result of a submitted step that was cancelled before it started (it never will)."""
    result = failed_result(RuntimeError(f"step {spec.invocation_id!r} was not started: {reason}"))
    result.error = {"type": "stopped", "message": f"not started: {reason}"}
    result.started = False
    return result


def resolve(future: Future[StepResult], result: StepResult) -> bool:
    """Give ``future`` its result unless it has one (a timeout or a cancel came first)."""
    try:
        future.set_result(result)
    except InvalidStateError:
        return False
    return True


def resolve_soon(future: Future[StepResult], result: StepResult) -> None:
    """Resolve ``future`` from a thread of its own: its callbacks (the engine going on with
    the next steps) never run inside ``submit`` or an executor's lock."""
    threading.Thread(target=resolve, args=(future, result), name="unspool-step-result", daemon=True).start()


def describe_error(exc: BaseException) -> dict[str, Any]:
    message = str(exc)
    if isinstance(exc, SystemExit):
        message = f"the step called sys.exit({exc.code!r}) (argparse does on a usage error); it failed with that exit"
    return {
        "type": type(exc).__qualname__,
        "message": message,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


__all__ = ["ArtifactRef", "StepOutputError", "artifact_store_for", "load_artifact"]
