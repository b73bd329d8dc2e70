"""Fan-out: map, product, unmapped, unpack, chunk, lists of artifacts (reference samples)."""

from __future__ import annotations

import sqlalchemy as sa

from unspool import Client, StepInputError, pipeline, step, unmapped
from unspool.testing import current_stores


def _lineage_rows(step_run_id: str) -> list[tuple]:
    with current_stores().metadata.read() as conn:
        return conn.execute(
            sa.text(
                "select direction, name, position, item_index, artifact_version_id "
                "from step_run_artifacts where step_run_id = :id order by direction, position"
            ),
            {"id": step_run_id},
        ).all()


@step
def producer() -> list[int]:
    return [1, 2, 3]


@step
def worker(value: int) -> int:
    return value * 2


@step
def reducer(values: list[int]) -> int:
    return sum(values)


def test_map_reduce_sample_runs_one_invocation_per_element_and_records_lineage() -> None:
    @pipeline(dynamic=True, enable_cache=False)
    def map_reduce():
        values = producer()
        results = worker.map(values)
        reducer(results)

    run = map_reduce()
    assert list(run.steps) == ["producer", "worker", "worker_2", "worker_3", "reducer"]
    assert run.steps["reducer"].output.load() == 12
    producer_out = run.steps["producer"].output
    for i, inv in enumerate(["worker", "worker_2", "worker_3"]):
        rows = _lineage_rows(run.steps[inv].id)
        inputs = [r for r in rows if r.direction == "input"]
        # each mapped step consumes item i of the producer's single list artifact
        assert [(r.artifact_version_id, r.item_index) for r in inputs] == [(producer_out.id, i)]
    reducer_inputs = run.steps["reducer"].inputs["values"]
    assert [a.load() for a in reducer_inputs] == [2, 4, 6]
    assert {a.producer_step_run_id for a in reducer_inputs} == {
        run.steps[i].id for i in ("worker", "worker_2", "worker_3")
    }
    assert len(producer_out.consumers) == 3


def test_product_is_cartesian_in_signature_order_last_input_fastest() -> None:
    @step
    def int_values() -> list[int]:
        return [1, 2]

    @step
    def str_values() -> list[str]:
        return ["a", "b", "c"]

    @step
    def combine(a: int, b: str) -> str:
        return f"{a}{b}"

    seen = {}

    @pipeline(dynamic=True)
    def cartesian_example():
        a = int_values()
        b = str_values()
        seen["result"] = combine.product(a=a, b=b).load()

    run = cartesian_example()
    assert seen["result"] == ["1a", "1b", "1c", "2a", "2b", "2c"]
    combos = [s for s in run.steps.values() if s.name == "combine"]
    assert len(combos) == 6
    assert [s.output.load() for s in combos] == seen["result"]


def test_unmapped_passes_the_whole_artifact_to_every_invocation() -> None:
    @step
    def make(length: int) -> list[int]:
        return [1] * length

    @step
    def consumer(a: int, b: list[int]) -> int:
        return a + len(b)

    @pipeline(dynamic=True)
    def unmapped_example():
        a = make(length=3)
        b = make(length=4)
        consumer.map(a=a, b=unmapped(b))

    run = unmapped_example()
    consumers = [s for s in run.steps.values() if s.name == "consumer"]
    assert [s.output.load() for s in consumers] == [5, 5, 5]
    b_artifact = run.steps["make_2"].output
    for s in consumers:
        assert [a.id for a in s.inputs["b"]] == [b_artifact.id]
        assert [r.item_index for r in _lineage_rows(s.id) if r.name == "b"] == [None]


def test_unpack_gives_lists_aligned_by_invocation() -> None:
    @step
    def create_int_list() -> list[int]:
        return [1, 2]

    @step
    def compute(a: int) -> tuple[int, int]:
        return a * 2, a * 3

    got = {}

    @pipeline(dynamic=True)
    def map_pipeline():
        ints = create_int_list()
        results = compute.map(a=ints)
        double, triple = results.unpack()
        got["doubles"] = [f.load() for f in double]
        got["triples"] = [f.load() for f in triple]
        reducer(double)

    run = map_pipeline()
    assert got == {"doubles": [2, 4], "triples": [3, 6]}
    assert run.steps["reducer"].output.load() == 6


def test_chunk_wires_one_element_and_load_drives_control_flow() -> None:
    @step
    def create_int_list() -> list[int]:
        return [1, 2, 3, 4]

    @step
    def compute(a: int) -> int:
        return a * 2

    @pipeline(dynamic=True)
    def custom_loop():
        ints = create_int_list()
        for index, value in enumerate(ints.load()):
            if value % 2 == 0:
                chunk = ints.chunk(index=index)
                compute(chunk)

    run = custom_loop()
    assert [s.output.load() for s in run.steps.values() if s.name == "compute"] == [4, 8]
    rows = _lineage_rows(run.steps["compute_2"].id)
    assert [r.item_index for r in rows if r.direction == "input"] == [3]


def test_chunk_out_of_range_is_a_clear_error() -> None:
    @step
    def two() -> list[int]:
        return [1, 2]

    @pipeline(dynamic=True)
    def bad():
        two().chunk(5)

    try:
        bad()
    except IndexError as exc:
        assert "chunk(5) is out of range" in str(exc) and "2 items" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected IndexError")
    assert Client().list_pipeline_runs()[0].status.value == "failed"


def test_map_with_unequal_lengths_names_each_input() -> None:
    @step
    def make(n: int) -> list[int]:
        return list(range(n))

    @step
    def add(a: int, b: int) -> int:
        return a + b

    @pipeline(dynamic=True)
    def mismatched():
        add.map(a=make(2), b=make(3))

    try:
        mismatched()
    except StepInputError as exc:
        assert "a=2" in str(exc) and "b=3" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected StepInputError")


def test_map_over_a_plain_list_makes_each_element_a_parameter() -> None:
    @pipeline(dynamic=True)
    def plain():
        results = worker.map([5, 6, 7])
        reducer(results)

    run = plain()
    mapped = [s for s in run.steps.values() if s.name == "worker"]
    assert [s.parameters for s in mapped] == [{"value": 5}, {"value": 6}, {"value": 7}]
    assert run.steps["reducer"].output.load() == 36


def test_map_over_a_list_of_artifacts_and_over_a_map_result() -> None:
    @pipeline(dynamic=True)
    def chained():
        singles = [worker(i) for i in range(3)]  # list of output artifacts
        doubled = worker.map(singles)  # map over them
        again = worker.map(doubled)  # map over a map result
        reducer(again)

    run = chained()
    assert run.steps["reducer"].output.load() == (0 + 2 + 4) * 4


def test_mapping_a_non_sequence_artifact_is_a_clear_error() -> None:
    @step
    def one() -> int:
        return 1

    @pipeline(dynamic=True)
    def bad():
        worker.map(one())

    try:
        bad()
    except StepInputError as exc:
        assert "not a sequence" in str(exc) and "unmapped" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected StepInputError")


def test_mapped_steps_load_only_their_own_element(monkeypatch) -> None:
    from unspool import _materializers

    whole_loads = []
    original = _materializers.SequenceMaterializer.load

    def spy(self, data_type):
        whole_loads.append(self.uri)
        return original(self, data_type)

    monkeypatch.setattr(_materializers.SequenceMaterializer, "load", spy)

    @pipeline(dynamic=True, enable_cache=False)
    def fan():
        worker.map(producer())

    run = fan()
    assert run.status.value == "completed"
    assert whole_loads == []  # nobody, not even the orchestrator, loaded the whole list


def test_ten_thousand_way_fan_out_is_ordinary_small_version(home) -> None:
    @step
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @pipeline(dynamic=True)
    def big(n: int):
        reducer(worker.map(numbers(n)))

    run = big(500)
    assert run.status.value == "completed"
    assert len(run.steps) == 502
    assert run.steps["reducer"].output.load() == 2 * sum(range(500))


def test_unpack_on_an_empty_map_gives_one_empty_list_per_output() -> None:
    @step
    def nothing() -> list[int]:
        return []

    @step
    def compute(a: int) -> tuple[int, int]:
        return a * 2, a * 3

    got = {}

    @pipeline(dynamic=True)
    def empty_map():
        results = compute.map(a=nothing())
        double, triple = results.unpack()
        got["lists"] = (double, triple)
        got["from_a_list"] = compute.map(a=[]).unpack()
        reducer(double)

    run = empty_map()
    assert got["lists"] == ([], []) and got["from_a_list"] == ([], [])
    assert run.status.value == "completed"
    assert run.steps["reducer"].output.load() == 0
