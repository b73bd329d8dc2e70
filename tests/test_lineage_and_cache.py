"""Lineage links every step run to the artifact versions it read and wrote; caching reuses them.

A cache hit records a step run with status ``cached`` that points at the original step run
(``original_step_run_id``) and at the original's output artifact versions, and runs nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, Any

import pytest

from unspool import (
    ArtifactConfig,
    BaseMaterializer,
    Client,
    ExecutionStatus,
    pipeline,
    step,
)
from unspool.testing import reset_stores

CACHED = ExecutionStatus.CACHED
COMPLETED = ExecutionStatus.COMPLETED


class ReprMaterializer(BaseMaterializer):
    def save(self, data: Any) -> None:
        self._write("repr.txt", repr(data).encode())

    def load(self, data_type: type) -> Any:
        return int(self._read("repr.txt"))


def links(home: Path, step_run_id: str) -> list[tuple]:
    Client()
    with sqlite3.connect(home / "unspool.db") as conn:
        return conn.execute(
            "SELECT direction, name, position, item_index, artifact_version_id FROM step_run_artifacts "
            "WHERE step_run_id = ? ORDER BY direction, name, position",
            (step_run_id,),
        ).fetchall()


# -- lineage ------------------------------------------------------------------------------------------


def test_step_runs_link_their_input_and_output_versions(home: Path) -> None:
    @step
    def load() -> list[int]:
        return [1, 2, 3]

    @step
    def split(data: list[int]) -> tuple[Annotated[list, "train"], Annotated[list, "test"]]:
        return data[:2], data[2:]

    @step
    def evaluate(train: list, test: list, extra: list[int]) -> float:
        return len(train) / (len(train) + len(test) + len(extra))

    @pipeline
    def lineage() -> None:
        data = load()
        train, test = split(data)
        evaluate(train, test, [data, train])

    run = lineage()

    load_out = run.steps["load"].output
    train = run.steps["split"].outputs["train"][0]
    test = run.steps["split"].outputs["test"][0]
    evaluated = run.steps["evaluate"]
    assert {k: [v.id for v in vs] for k, vs in run.steps["split"].inputs.items()} == {"data": [load_out.id]}
    assert {k: [v.id for v in vs] for k, vs in evaluated.inputs.items()} == {
        "train": [train.id],
        "test": [test.id],
        "extra": [load_out.id, train.id],  # list inputs keep their order
    }
    assert links(home, evaluated.id) == [
        ("input", "extra", 0, None, load_out.id),
        ("input", "extra", 1, None, train.id),
        ("input", "test", 0, None, test.id),
        ("input", "train", 0, None, train.id),
        ("output", "output", 0, None, evaluated.output.id),
    ]

    # From an artifact version: its producer and its consumers.
    assert train.producer_step_run.id == run.steps["split"].id
    assert sorted(c.invocation_id for c in train.consumers) == ["evaluate"]
    assert sorted(c.invocation_id for c in load_out.consumers) == ["evaluate", "split"]
    assert evaluated.output.consumers == []
    assert load_out.producer_step_run.outputs["output"][0].id == load_out.id


def test_chunk_inputs_record_the_element_index(home: Path) -> None:
    @step
    def numbers() -> list[int]:
        return [10, 20, 30]

    @step
    def double(x: int) -> int:
        return 2 * x

    @pipeline(dynamic=True)
    def chunks() -> None:
        values = numbers()
        double(values.chunk(2))

    run = chunks()

    source = run.steps["numbers"].output
    assert run.steps["double"].output.load() == 60
    assert links(home, run.steps["double"].id)[0] == ("input", "x", 0, 2, source.id)
    assert [c.invocation_id for c in source.consumers] == ["double"]


def test_stored_artifact_versions_can_feed_a_later_run() -> None:
    @step
    def produce() -> Annotated[int, "base_value"]:
        return 41

    @step
    def increment(x: int) -> int:
        return x + 1

    @pipeline(dynamic=True)
    def first() -> None:
        produce()

    @pipeline(dynamic=True)
    def second() -> None:
        increment(Client().get_artifact_version("base_value"))

    first_run = first()
    second_run = second()

    base = Client().get_artifact_version("base_value")
    assert second_run.steps["increment"].output.load() == 42
    assert second_run.steps["increment"].inputs["x"][0].id == base.id
    assert [c.run_id for c in base.consumers] == [second_run.id]
    assert base.producer_step_run.run_id == first_run.id


# -- caching -----------------------------------------------------------------------------------------------


def test_cache_is_on_by_default_and_a_hit_runs_nothing(home: Path) -> None:
    calls: list[int] = []

    @step
    def expensive(x: int) -> int:
        calls.append(x)
        print("computing")
        return x * 10

    @step
    def consume(value: int) -> int:
        calls.append(-value)
        return value + 1

    @pipeline
    def cached(x: int) -> None:
        consume(expensive(x))

    first = cached(1)
    second = cached(1)

    assert calls == [1, -10]  # the second run executed nothing
    assert second.status == COMPLETED
    for inv in ("expensive", "consume"):
        original, hit = first.steps[inv], second.steps[inv]
        assert original.status == COMPLETED and original.original_step_run_id is None
        assert hit.status == CACHED
        assert hit.original_step_run_id == original.id
        assert hit.original_step_run.id == original.id
        assert hit.cache_key == original.cache_key
        assert hit.output.id == original.output.id  # the same artifact version, not a copy
        assert hit.start_time is not None and hit.end_time is not None
        assert hit.logs == ""
    assert second.steps["consume"].inputs["value"][0].id == first.steps["expensive"].output.id
    assert first.steps["expensive"].logs.strip() == "computing"
    # No new versions were written.
    assert len(Client().list_artifact_versions()) == 2
    assert [c.run_id for c in first.steps["expensive"].output.consumers].count(second.id) == 1
    assert links(home, second.steps["expensive"].id)[0][0] == "output"


def test_cache_hits_survive_a_new_process_view_of_the_store() -> None:
    calls: list[int] = []

    @step
    def work() -> int:
        calls.append(1)
        return 1

    @pipeline(dynamic=True)
    def persisted() -> None:
        work()

    first = persisted()
    reset_stores()  # drop the in-memory memo: the hit must come from the metadata store
    second = persisted()

    assert calls == [1]
    assert second.steps["work"].status == CACHED
    assert second.steps["work"].original_step_run_id == first.steps["work"].id


@pytest.mark.parametrize("where", ["pipeline", "step", "with_options"])
def test_cache_can_be_switched_off(where: str) -> None:
    calls: list[str] = []

    @step(enable_cache=False if where == "step" else None)
    def side_effect() -> int:
        calls.append("ran")
        return 1

    @pipeline(dynamic=True, enable_cache=where != "pipeline")
    def uncached() -> None:
        if where == "with_options":
            side_effect.with_options(enable_cache=False)()
        else:
            side_effect()

    uncached()
    second = uncached()

    assert calls == ["ran", "ran"]
    assert second.steps["side_effect"].status == COMPLETED
    assert second.steps["side_effect"].original_step_run_id is None


def test_step_enable_cache_overrides_the_pipeline() -> None:
    calls: list[str] = []

    @step(enable_cache=True)
    def cached_anyway() -> int:
        calls.append("ran")
        return 1

    @pipeline(dynamic=True, enable_cache=False)
    def mostly_uncached() -> None:
        cached_anyway()

    mostly_uncached()
    second = mostly_uncached()
    assert calls == ["ran"]
    assert second.steps["cached_anyway"].status == CACHED


def test_cache_key_covers_parameters() -> None:
    calls: list[int] = []

    @step
    def scaled(x: int, factor: int = 2) -> int:
        calls.append(x)
        return x * factor

    @pipeline(dynamic=True)
    def params() -> None:
        scaled(1)
        scaled(1, factor=2)  # same parameters after defaults: hit
        scaled(2)
        scaled(1, factor=3)

    run = params()
    assert [s.status for s in run.steps.values()] == [COMPLETED, CACHED, COMPLETED, COMPLETED]
    assert calls == [1, 2, 1]


def test_cache_key_covers_input_content_not_input_identity() -> None:
    calls: list[int] = []

    @step(enable_cache=False)
    def source(x: int) -> int:
        return x

    @step
    def sink(value: int) -> int:
        calls.append(value)
        return value

    @pipeline(dynamic=True)
    def content(x: int) -> None:
        sink(source(x))

    content(1)
    same = content(1)  # source reruns and writes a new version with the same content
    different = content(2)

    assert same.steps["source"].status == COMPLETED
    assert same.steps["sink"].status == CACHED
    assert different.steps["sink"].status == COMPLETED
    assert calls == [1, 2]


def test_cache_key_covers_source_code() -> None:
    calls: list[str] = []

    def compute_v1(x: int) -> int:
        calls.append("v1")
        return x

    def compute_v2(x: int) -> int:
        calls.append("v2")
        return x + 1

    v1 = step(name="compute")(compute_v1)
    v2 = step(name="compute")(compute_v2)

    @pipeline(dynamic=True)
    def code(version: int) -> None:
        (v1 if version == 1 else v2)(1)

    code(1)
    changed = code(2)
    assert calls == ["v1", "v2"]
    assert changed.steps["compute"].status == COMPLETED
    assert code(1).steps["compute"].status == CACHED  # back to v1: the old result is reused


def test_cache_key_covers_output_configuration() -> None:
    calls: list[str] = []

    @step
    def produce() -> int:
        calls.append("ran")
        return 1

    @step(substitutions={"kind": "a"})
    def named() -> Annotated[int, ArtifactConfig(name="named_{kind}")]:
        calls.append("named")
        return 1

    @pipeline(dynamic=True)
    def outputs() -> None:
        produce()
        produce.with_options(output_materializers=ReprMaterializer)()  # other materializer: miss
        named()
        named.with_options(substitutions={"kind": "b"})()  # other artifact name: miss
        named.with_options(substitutions={"kind": "a"})()  # same as the first: hit

    run = outputs()
    assert [s.status for s in run.steps.values()] == [COMPLETED, COMPLETED, COMPLETED, COMPLETED, CACHED]
    assert calls == ["ran", "ran", "named", "named"]
    assert run.steps["produce_2"].output.materializer.endswith(":ReprMaterializer")
    assert [s.output.name for s in list(run.steps.values())[2:]] == ["named_a", "named_b", "named_a"]


def test_failed_steps_are_never_cache_hits() -> None:
    attempts: list[int] = []

    @step
    def sometimes() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first time fails")
        return 1

    @pipeline(dynamic=True)
    def retrying() -> None:
        sometimes()

    with pytest.raises(Exception, match="first time fails"):
        retrying()
    second = retrying()
    third = retrying()

    assert len(attempts) == 2
    assert second.steps["sometimes"].status == COMPLETED
    assert third.steps["sometimes"].status == CACHED
    assert third.steps["sometimes"].original_step_run_id == second.steps["sometimes"].id


# -- what the cache key tells apart (issue 12, item 5) -------------------------------------------------

def test_steps_made_by_a_factory_do_not_share_cache_entries() -> None:
    def make(factor: int, name: str):
        @step(name=name)
        def scale(x: int) -> int:
            return x * factor

        return scale

    double, triple = make(2, "double"), make(3, "triple")
    same_name_a, same_name_b = make(4, "scale"), make(5, "scale")

    @pipeline(dynamic=True)
    def factory() -> None:
        double(5)
        triple(5)
        same_name_a(5)
        same_name_b(5)

    run = factory()
    assert [s.output.load() for s in run.steps.values()] == [10, 15, 20, 25]
    assert all(s.status == COMPLETED for s in run.steps.values())
    assert factory().steps["triple"].status == CACHED  # the same closure value again: a hit


def test_parameters_of_different_types_have_different_keys() -> None:
    calls: list[Any] = []

    @step
    def echo(value: Any) -> str:
        calls.append(value)
        return repr(value)

    @pipeline(dynamic=True)
    def typed() -> None:
        echo((1, 2))
        echo([1, 2])
        echo({1: "a"})
        echo({"1": "a"})
        echo(1)
        echo(1.0)
        echo(True)
        echo([1, 2])  # a hit

    run = typed()
    statuses = [s.status for s in run.steps.values()]
    assert statuses == [COMPLETED] * 7 + [CACHED]
    assert [s.output.load() for s in run.steps.values()] == [
        "(1, 2)", "[1, 2]", "{1: 'a'}", "{'1': 'a'}", "1", "1.0", "True", "[1, 2]"]


def test_function_defaults_are_part_of_the_key() -> None:
    def make(offset: int):
        def shifted(x: int, *, by: int = offset) -> int:
            return x + by
        return step(name="shifted")(shifted)

    @pipeline(dynamic=True)
    def defaults(offset: int) -> None:
        make(offset)(1)

    defaults(1)
    run = defaults(2)
    assert run.steps["shifted"].status == COMPLETED
    assert run.steps["shifted"].output.load() == 3


def test_users_add_their_own_key_material_with_a_cache_policy(tmp_path: Path) -> None:
    from unspool import CachePolicy

    version = {"value": "v1"}
    calls: list[str] = []

    @step(cache_policy=CachePolicy(cache_func=lambda: version["value"]))
    def reads_outside_data() -> str:
        calls.append(version["value"])
        return version["value"]

    @pipeline(dynamic=True)
    def external() -> None:
        reads_outside_data()

    external()
    assert external().steps["reads_outside_data"].status == CACHED
    version["value"] = "v2"
    run = external()
    assert run.steps["reads_outside_data"].status == COMPLETED
    assert calls == ["v1", "v2"]


def test_source_dependencies_bring_helper_code_into_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys
    import textwrap

    from unspool import CachePolicy

    helpers = tmp_path / "cache_helpers_mod.py"
    helpers.write_text("def helper(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import cache_helpers_mod  # type: ignore[import-not-found]

    @step(cache_policy=CachePolicy(source_dependencies=[cache_helpers_mod.helper]))
    def uses_helper(x: int) -> int:
        return sys.modules["cache_helpers_mod"].helper(x)

    @pipeline(dynamic=True)
    def with_helper() -> None:
        uses_helper(1)

    with_helper()
    assert with_helper().steps["uses_helper"].status == CACHED
    helpers.write_text(textwrap.dedent("""
        def helper(x):
            return x + 100
    """))
    importlib.reload(cache_helpers_mod)
    run = with_helper()
    assert run.steps["uses_helper"].status == COMPLETED
    assert run.steps["uses_helper"].output.load() == 101
