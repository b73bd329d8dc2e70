"""The declarative API: a pipeline written as a list of tasks instead of a function body.

::

    from unspool import Pipeline, PythonTask

    pipe = Pipeline(steps=[
        PythonTask(function=load, name="process", returns=["rows", "source"]),
        PythonTask(function=analyze, name="analyze"),
    ])
    run = pipe.execute(config="config.yaml", limit=10)   # config and parameters optional

How it maps onto the engine
---------------------------
:func:`build_pipeline` turns the tasks into steps (each named after its task) and generates
the body of a *static* pipeline that calls them in list order. So a declarative run is an
ordinary run: its DAG is stored before anything runs, every value is a versioned artifact
with lineage, results are cached, and the config file (``steps:`` keys are task names,
``orchestrator:`` chooses the executor) applies unchanged.

Tasks run in list order: each task gets an edge from the task before it even when no value
flows between them, so a failed task skips all later ones (as in a sequential executor).

Named values (the data-flow rule)
---------------------------------
* ``returns=["a"]``: the task's return value is one value named ``a``.
* ``returns=["a", "b"]``: the task returns a tuple (or list) of two values, or a dict with
  exactly the keys ``a`` and ``b``; each is a value of that name.
* no ``returns``: a task annotated ``-> None`` produces nothing; otherwise its return value
  is one value named after the task.

A parameter of a later task that has the name of a value receives that value (as an
artifact input, so the edge and lineage are recorded); if several earlier tasks produce the
name, the latest one wins. Parameters that no earlier task produces are the *pipeline's
parameters*: pass them to ``execute(**params)`` or under ``parameters:`` in the config file.
Tasks share them by name; a pipeline parameter's default is the default of the first task
that takes it (required when that task has none).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable

from ._config import PipelineConfig
from ._context import require_body
from ._errors import StepDefinitionError, StepOutputError
from ._step import OutputSpec, Step, StepConfig, _validate_config


class PythonTask:
    """One task of a declarative pipeline: a Python function and the names of its values.

    ``function`` may be a plain function or a ``@step`` (its options are kept); ``name``
    defaults to the function's name; further keyword arguments are step options
    (``enable_cache``, ``retry``, ``timeout``, ...), as for ``@step``.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        name: str | None = None,
        returns: list[str] | None = None,
        **step_options: Any,
    ) -> None:
        if not callable(function):
            raise StepDefinitionError(f"PythonTask needs a function, got {function!r}")
        self.function = function
        self.name = name or getattr(function, "__name__", None) or ""
        if not self.name.isidentifier():
            raise StepDefinitionError(
                f"PythonTask name {self.name!r} must be an identifier (letters, digits, _); it "
                "names the step and the config file's steps: entry"
            )
        if returns is not None:
            if isinstance(returns, str) or not all(isinstance(r, str) and r.isidentifier() for r in returns):
                raise StepDefinitionError(
                    f"PythonTask {self.name!r}: returns must be a list of identifiers, got {returns!r}"
                )
            if len(set(returns)) != len(returns):
                raise StepDefinitionError(f"PythonTask {self.name!r}: duplicate names in returns={returns}")
        self.returns = list(returns) if returns is not None else None
        unknown = set(step_options) - {f for f in StepConfig.__dataclass_fields__ if f != "name"}
        if unknown:
            raise StepDefinitionError(f"PythonTask {self.name!r} got unknown option(s) {sorted(unknown)}")
        _validate_config(step_options)
        self.step_options = step_options

    @property
    def value_names(self) -> list[str]:
        """The names of the values this task produces (see the module docstring)."""
        if self.returns is not None:
            return list(self.returns)
        func = self.function.func if isinstance(self.function, Step) else self.function
        try:
            annotation = typing.get_type_hints(func).get("return", inspect.Parameter.empty)
        except Exception:
            annotation = inspect.Parameter.empty
        if annotation is None or annotation is type(None):
            return []
        return [self.name]

    def __repr__(self) -> str:
        return f"PythonTask(name={self.name!r}, returns={self.value_names!r})"


class _TaskFunction:
    """The function a task's step runs: the user's function, its return value split by name.

    It presents the user's function as its own (``__wrapped__``, ``__code__``, signature,
    annotations), so signatures, source hashes for caching and input annotations are those
    of the user's function.
    """

    __slots__ = ("function", "task", "names")

    def __init__(self, function: Callable[..., Any], task: str, names: list[str]) -> None:
        self.function = function
        self.task = task
        self.names = names

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.function

    @property
    def __code__(self) -> Any:
        return getattr(self.function, "__code__", None)

    @property
    def __annotations__(self) -> dict[str, Any]:  # type: ignore[override]
        return getattr(self.function, "__annotations__", {})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        value = self.function(*args, **kwargs)
        if len(self.names) <= 1:
            return value
        if isinstance(value, dict):
            if set(value) != set(self.names):
                raise StepOutputError(
                    f"task {self.task!r} returned a dict with keys {sorted(value)} but declares "
                    f"returns={self.names}; return exactly those keys"
                )
            return tuple(value[n] for n in self.names)
        if isinstance(value, (tuple, list)) and len(value) == len(self.names):
            return tuple(value)
        got = f"{len(value)} values" if isinstance(value, (tuple, list)) else f"a {type(value).__name__}"
        raise StepOutputError(
            f"task {self.task!r} declares returns={self.names} but returned {got}; return a "
            f"tuple of {len(self.names)} values or a dict with those keys"
        )

    def __repr__(self) -> str:
        return f"<task {self.task} -> {self.names}>"


def _task_step(task: PythonTask) -> Step[Any]:
    function = task.function
    base = StepConfig(name=task.name)
    if isinstance(function, Step):
        base = dataclasses.replace(function.config, name=task.name)
        function = function.func
    for param in inspect.signature(function).parameters.values():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise StepDefinitionError(
                f"task {task.name!r}: *args/**kwargs parameters are not supported; name each "
                "parameter so values can be passed to it by name"
            )
    names = task.value_names
    step: Step[Any] = Step(_TaskFunction(function, task.name, names), base)
    if task.step_options:
        step = step.with_options(**task.step_options)
    step._outputs = tuple(OutputSpec(n, Any, None) for n in names)
    return step


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    """The signature with string annotations resolved where possible."""
    try:
        return inspect.signature(function, eval_str=True)
    except Exception:
        return inspect.signature(function)


def _same_value(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def build_pipeline(tasks: list[Any], *, name: str | None, module: str) -> tuple[Callable[..., Any], Any]:
    """The generated body and the configuration of a declarative pipeline."""
    tasks = list(tasks)
    if not tasks:
        raise StepDefinitionError("Pipeline(steps=[...]) needs at least one PythonTask")
    for task in tasks:
        if not isinstance(task, PythonTask):
            raise StepDefinitionError(
                f"Pipeline(steps=[...]) takes PythonTask(function=..., name=...) objects, got {task!r}"
            )
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise StepDefinitionError(f"task names must be unique; {duplicates} appear more than once")
    steps = [_task_step(t) for t in tasks]

    # Which parameters come from earlier tasks' values, and which are the pipeline's.
    produced: set[str] = set()
    pipeline_params: dict[str, inspect.Parameter] = {}
    for task, step in zip(tasks, steps):
        for pname, param in _signature(step.func.function).parameters.items():
            if pname not in produced and pname not in pipeline_params:
                pipeline_params[pname] = inspect.Parameter(
                    pname, inspect.Parameter.KEYWORD_ONLY, default=param.default, annotation=param.annotation
                )
        produced.update(task.value_names)

    def body(**params: Any) -> None:
        run = require_body("a declarative pipeline")
        values: dict[str, Any] = {}
        previous = None
        for task, step in zip(tasks, steps):
            kwargs = {}
            for pname, param in step.signature.parameters.items():
                if pname in values:
                    kwargs[pname] = values[pname]
                elif pname in params and not (
                    param.default is not inspect.Parameter.empty and _same_value(params[pname], param.default)
                ):  # the task's own default is not forwarded: a config file's value may fill it
                    kwargs[pname] = params[pname]
            future = step.submit(**kwargs)
            if previous is not None:
                run.order_after(future, previous)  # run in list order
            previous = future
            outputs = future.output_futures()
            if outputs is not None:
                outputs = outputs if isinstance(outputs, tuple) else (outputs,)
                values.update(zip(task.value_names, outputs))

    pipeline_name = name or "_".join(names)
    body.__name__ = body.__qualname__ = pipeline_name
    body.__module__ = module
    body.__doc__ = f"Declarative pipeline of tasks {names}."
    body.__signature__ = inspect.Signature(list(pipeline_params.values()))  # type: ignore[attr-defined]
    body._unspool_tasks = tuple(tasks)  # type: ignore[attr-defined]
    return body, PipelineConfig(name=pipeline_name, dynamic=False)
