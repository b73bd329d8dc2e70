"""Where a pipeline is defined, and loading it back from there in another process.

A pipeline is found again by its *source* and *attribute*: the source is the dotted name
of the module defining it when that module was imported normally, or the absolute path of
the ``.py`` file when it was a script (``__main__``) or loaded from a file (the CLI's
``FILE.py:PIPELINE``); the attribute is the module-level name bound to the pipeline.

Loading a module name that a fresh interpreter cannot import (a test module, a module
found through a ``sys.path`` entry added at run time) falls back to the recorded file: its
import root is put on ``sys.path`` and the name imported again, else the file is loaded.
Files are imported under their stem (``flows/train.py`` -> ``train``) with their folder on
``sys.path``, as ``python FILE`` would, unless that name is taken by another module.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._errors import NotFoundError, PipelineError

if TYPE_CHECKING:
    from ._pipeline import Pipeline

_FILE_MARKERS = ("_unspool_file_loaded", "_unspool_cli_loaded")

# The file or module unspool is importing to find a pipeline in (None otherwise). A pipeline
# called at the top level of that module (a script without ``if __name__ == "__main__":``)
# does not run: loading a file never starts a run.
_loading: contextvars.ContextVar[str | None] = contextvars.ContextVar("unspool_loading", default=None)


def loading() -> str | None:
    """What unspool is importing right now to find a pipeline, if anything."""
    return _loading.get()


@contextlib.contextmanager
def _importing(what: str) -> Any:
    token = _loading.set(what)
    try:
        yield
    finally:
        _loading.reset(token)


def locate(pipeline: Pipeline[Any]) -> tuple[str, str, str | None]:
    """``(source, attribute, source_file)`` of a module-level pipeline."""
    module_name = getattr(pipeline.func, "__module__", None) or "__main__"
    module = sys.modules.get(module_name)
    if module is None:
        raise PipelineError(f"cannot find module {module_name!r} defining pipeline {pipeline.name!r}")
    attribute = find_attribute(module, pipeline)
    file = getattr(module, "__file__", None)
    source_file = str(Path(file).resolve()) if file else None
    if module_name == "__main__" or any(getattr(module, m, False) for m in _FILE_MARKERS):
        if source_file is None:
            raise PipelineError(
                f"pipeline {pipeline.name!r} was defined interactively; define it in a .py file "
                "so it can be loaded again"
            )
        return source_file, attribute, source_file
    return module_name, attribute, source_file


def _is_pipeline(value: Any) -> bool:
    # Pipelines carry this marker: the loader sits below ``_pipeline`` and cannot import it.
    return getattr(type(value), "_unspool_pipeline", False) is True


def find_attribute(module: ModuleType, pipeline: Pipeline[Any]) -> str:
    candidates = [(n, v) for n, v in vars(module).items() if _is_pipeline(v)]
    for name, value in candidates:
        if value is pipeline:
            return name
    same = [n for n, v in candidates if v.func is pipeline.func]
    if same:  # a with_options() copy of a module-level pipeline
        preferred = getattr(pipeline.func, "__name__", None)
        return preferred if preferred in same else same[0]
    raise PipelineError(
        f"pipeline {pipeline.name!r} is not a module-level name of {module.__name__!r}; it is "
        "found again by module and name, so define it (or assign it) at module level"
    )


def load_file(path: str | Path) -> ModuleType:
    """Import a ``.py`` file by path (once: a file already imported is reused)."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise NotFoundError(f"no Python file at {file}")
    for module in list(sys.modules.values()):
        mod_file = getattr(module, "__file__", None)
        if mod_file and os.path.abspath(mod_file) == str(file):
            return module
    name = file.stem if file.stem.isidentifier() else "unspool_user_module"
    if name in sys.modules:
        name = f"unspool_user_{name}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise PipelineError(f"cannot import {file}: it is not a Python source file")
    module = importlib.util.module_from_spec(spec)
    module._unspool_file_loaded = True  # type: ignore[attr-defined]
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))
    sys.modules[name] = module
    try:
        with _importing(str(file)):
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_module(source: str, source_file: str | None = None) -> ModuleType:
    """The module ``source`` names: a dotted module name or a ``.py`` path."""
    if source.endswith(".py") or os.sep in source or "/" in source:
        return load_file(source)
    try:
        with _importing(source):
            return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not (source == missing or source.startswith(missing + ".")):
            raise  # the module exists but one of its own imports is missing
        if not source_file or not Path(source_file).is_file():
            raise NotFoundError(
                f"cannot import module {source!r} and its file {source_file or '(unknown)'} does "
                "not exist; run from the project folder or install the project"
            ) from None
    path = Path(source_file).resolve()
    parts = source.split(".")
    base = path.parent if path.name == "__init__.py" else path.with_suffix("")
    if len(base.parts) > len(parts) and list(base.parts[-len(parts):]) == parts:
        root = str(Path(*base.parts[: -len(parts)]))  # the sys.path entry it was imported from
        if root not in sys.path:
            sys.path.insert(0, root)
        importlib.invalidate_caches()
        with _importing(source):
            return importlib.import_module(source)
    return load_file(path)


def load_pipeline(source: str, attribute: str, source_file: str | None = None) -> Pipeline[Any]:
    """The pipeline bound to ``attribute`` in the module ``source`` names."""
    module = load_module(source, source_file)
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise NotFoundError(f"{source} has no attribute {attribute!r}; was the pipeline renamed?")
        obj = getattr(obj, part)
    if not _is_pipeline(obj):
        raise PipelineError(f"{source}:{attribute} is a {type(obj).__name__}, not an unspool pipeline")
    return obj


def pipeline_source(pipeline: Pipeline[Any]) -> dict[str, Any]:
    """Where a pipeline can be loaded from again; ``attribute`` is None when it cannot."""
    try:
        source, attribute, source_file = locate(pipeline)
    except PipelineError as exc:
        return {"source": None, "attribute": None, "source_file": None, "why": str(exc)}
    return {"source": source, "attribute": attribute, "source_file": source_file}


def import_pipeline(recorded: dict[str, Any]) -> Pipeline[Any]:
    """The pipeline a run recorded with :func:`pipeline_source`."""
    if not recorded.get("attribute"):
        raise PipelineError(f"cannot resume: {recorded.get('why') or 'the run did not record where its pipeline is defined'}")
    return load_pipeline(recorded["source"], recorded["attribute"], recorded.get("source_file"))
