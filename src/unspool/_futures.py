"""What a pipeline body holds: references to outputs that exist now or will exist soon.

* :class:`ArtifactFuture` - one output of one step invocation. Returned by a synchronous
  step call (already done) and by ``StepRunFuture.result()``; ``load()`` gives the data,
  ``chunk(i)`` one element of it, and passing it to a step creates a DAG edge.
* :class:`StepRunFuture` - a submitted step (``step.submit(...)``).
* :class:`MapResultFuture` - the invocations made by ``step.map``/``step.product``.
* :class:`ArtifactChunk` - element ``i`` of a sequence artifact, loaded only by the step
  that receives it.
* :class:`unmapped` - marks a ``map``/``product`` input to be passed whole.

All waiting goes through the engine's invocation objects; these classes hold no state of
their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from ._artifact_io import ArtifactRef, artifact_store_for, load_artifact
from ._errors import PipelineError

if TYPE_CHECKING:
    from ._engine import Invocation


def _load_outputs(result: Any) -> Any:
    """The data of a step's or child run's outputs: None, one value, or a tuple."""
    if isinstance(result, tuple):
        return tuple(r.load() for r in result)
    return None if result is None else result.load()


class ArtifactFuture:
    """One output of one step invocation (an artifact version once the step finished)."""

    __slots__ = ("_inv", "output_name")

    def __init__(self, invocation: Invocation, output_name: str) -> None:
        self._inv = invocation
        self.output_name = output_name

    @property
    def invocation_id(self) -> str:
        return self._inv.id

    def done(self) -> bool:
        return self._inv.finished

    def result(self) -> ArtifactFuture:
        """Wait for the producing step; raise :class:`StepFailedError` if it failed."""
        self._inv.wait()
        return self

    def _produced(self) -> Any:
        self._inv.wait()
        return self._inv.outputs[self.output_name]

    def load(self) -> Any:
        """The artifact's data, loaded in this process (waits for the step)."""
        self._inv.run.ensure_not_compiling("load()", self._inv.id)
        return self._inv.run.load_produced(self._produced())

    def chunk(self, index: int) -> ArtifactChunk:
        """Element ``index`` of this (list-like) artifact, as a step input."""
        return ArtifactChunk(self, index)

    # metadata of the produced version
    @property
    def id(self) -> str:
        return self._produced().id

    @property
    def name(self) -> str:
        return self._produced().name

    @property
    def version(self) -> int:
        return self._inv.run.version_of(self._produced())

    @property
    def uri(self) -> str:
        return self._produced().uri

    @property
    def content_hash(self) -> str:
        return self._produced().content_hash

    @property
    def data_type(self) -> str:
        return self._produced().data_type

    @property
    def item_count(self) -> int | None:
        return self._produced().item_count

    def __repr__(self) -> str:
        state = "done" if self._inv.finished else "pending"
        return f"<ArtifactFuture {self._inv.id}.{self.output_name} ({state})>"


class ArtifactChunk:
    """Item ``index`` of a list-like artifact; only the consuming step loads it."""

    __slots__ = ("source", "index")

    def __init__(self, source: Any, index: int) -> None:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"chunk(index=...) needs an int, got {index!r}")
        self.source = source
        self.index = index
        count = None
        if isinstance(source, ArtifactFuture):
            if not source._inv.run.compiling:
                count = source.item_count
        else:
            count = getattr(source, "item_count", None)
        if count is not None and not -count <= index < count:
            raise IndexError(
                f"chunk({index}) is out of range: artifact {getattr(source, 'name', source)!r} has "
                f"{count} items (valid indexes 0..{count - 1})"
            )
        if count is not None and index < 0:
            self.index = index % count

    def load(self) -> Any:
        """The element's data, loaded in this process."""
        if isinstance(self.source, ArtifactFuture):
            run = self.source._inv.run
            run.ensure_not_compiling("load()", self.source.invocation_id)
            return run.load_produced(self.source._produced(), item_index=self.index)
        source = self.source
        ref = ArtifactRef(source.uri, source.materializer, source.data_type, self.index, source.size, f"{source.name}:{source.version}")
        return load_artifact(artifact_store_for(self.source.artifact_store_url), ref)

    def __repr__(self) -> str:
        return f"<ArtifactChunk {self.source!r}[{self.index}]>"


class StepRunFuture:
    """A step started with ``.submit()``; like ``concurrent.futures.Future``, but for a step."""

    __slots__ = ("_inv",)

    def __init__(self, invocation: Invocation) -> None:
        self._inv = invocation

    @property
    def invocation_id(self) -> str:
        return self._inv.id

    def done(self) -> bool:
        return self._inv.finished

    def wait(self, timeout: float | None = None) -> bool:
        """Wait without raising; True when the step finished."""
        if not self._inv.finished:  # nothing runs while a static body compiles: never wait there
            self._inv.run.ensure_not_compiling("wait for", self._inv.id)
        return self._inv.event.wait(timeout)

    def result(self) -> Any:
        """Wait; return the output artifact (a tuple for several outputs, None for none)."""
        self._inv.wait()
        return self._inv.output_futures()

    def load(self) -> Any:
        """Wait and load the output data (a tuple for several outputs)."""
        return _load_outputs(self.result())

    @property
    def status(self) -> str:
        return str(self._inv.status)

    @property
    def step_run(self) -> Any:
        """The stored step run (waits for the step)."""
        self.wait()
        run = self._inv.run
        run.stores.metadata.flush()  # the orchestrator's own writes, committed before reading
        return run.reader().get_step_run(self._inv.step_run_id)

    def output_futures(self) -> Any:
        """The step's outputs as artifact futures (None, one, or a tuple), without waiting."""
        return self._inv.output_futures()

    def _single(self) -> ArtifactFuture:
        outputs = self._inv.output_futures()
        if not isinstance(outputs, ArtifactFuture):
            n = 0 if outputs is None else len(outputs)
            raise PipelineError(
                f"step invocation {self._inv.id!r} has {n} outputs; pass one of them "
                "(future.result()[i]) instead of the whole future"
            )
        return outputs

    def __repr__(self) -> str:
        return f"<StepRunFuture {self._inv.id} ({self._inv.status})>"


class MapResultFuture:
    """The invocations created by one ``map``/``product`` call, in creation order."""

    __slots__ = ("futures", "output_names")

    def __init__(self, futures: list[StepRunFuture], output_names: list[str] | None = None) -> None:
        self.futures = futures
        # the mapped step's outputs, so an empty map still unpacks into one list per output
        self.output_names = output_names

    def __len__(self) -> int:
        return len(self.futures)

    def __iter__(self) -> Iterator[StepRunFuture]:
        return iter(self.futures)

    def __getitem__(self, index: int) -> StepRunFuture:
        return self.futures[index]

    def result(self) -> list[Any]:
        return [f.result() for f in self.futures]

    def load(self) -> list[Any]:
        return [f.load() for f in self.futures]

    def wait(self) -> None:
        for f in self.futures:
            f.wait()

    def unpack(self) -> tuple[list[ArtifactFuture], ...]:
        """One list per output, each aligned with the invocations (empty lists for an empty map)."""
        if self.futures:
            names = [spec.name for spec in self.futures[0]._inv.step.outputs]
        else:
            names = list(self.output_names or [])
        return tuple([ArtifactFuture(f._inv, name) for f in self.futures] for name in names)

    def __repr__(self) -> str:
        return f"<MapResultFuture of {len(self.futures)} invocations>"


class ChildRunFuture:
    """A child pipeline started with ``child.submit(...)``."""

    __slots__ = ("_run",)

    def __init__(self, run: Any) -> None:
        self._run = run

    @property
    def invocation_id(self) -> str:
        return self._run.invocation_id

    @property
    def run_id(self) -> str:
        return self._run.id

    def done(self) -> bool:
        return self._run.done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._run.done.wait(timeout)

    def result(self) -> Any:
        """Wait; return the child's outputs (None, an artifact, or a tuple); raise its failure."""
        self._run.done.wait()
        if self._run.outcome is not None:
            self._run.handled = True  # the body gets the child's failure now
            raise self._run.outcome
        return self._run.result

    def load(self) -> Any:
        """Wait and load the child's output data (a tuple for several outputs)."""
        return _load_outputs(self.result())

    def __repr__(self) -> str:
        return f"<ChildRunFuture {self._run.invocation_id}>"


class unmapped:  # noqa: N801 - lower case to read like the reference API
    """Pass this input whole to every invocation of ``map``/``product``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"unmapped({self.value!r})"
