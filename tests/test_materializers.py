"""Materializers: each kind of value round-trips through the artifact store, and says how it was stored."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Annotated, Any, Type

import numpy as np
import pandas as pd
import pydantic
import pytest

from unspool import (
    ArtifactType,
    BaseMaterializer,
    Client,
    ExecutionStatus,
    MaterializerError,
    pipeline,
    step,
)
from unspool._artifact_store import ArtifactStore
from unspool._materializers import SequenceMaterializer

M = "unspool._materializers:"


def expected_digest(path: Path) -> tuple[str, int]:
    """sha256 over (relative name, NUL, sha256 of the bytes) of every file, and the total size."""
    total, size = hashlib.sha256(), 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        data = file.read_bytes()
        total.update(file.relative_to(path).as_posix().encode() + b"\0" + hashlib.sha256(data).digest())
        size += len(data)
    return total.hexdigest(), size


class Point(pydantic.BaseModel):
    x: int
    y: float


@dataclasses.dataclass
class Config:
    name: str
    layers: list[int]


@dataclasses.dataclass
class Holder:
    payload: Any


@dataclasses.dataclass
class Nested:
    config: Config
    pair: tuple


class Colour(enum.IntEnum):
    RED = 1


class Mode(str, enum.Enum):
    FAST = "fast"


class Opaque:
    """No materializer claims it: it is cloudpickled."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value


class Celsius:
    def __init__(self, degrees: float) -> None:
        self.degrees = degrees


class CelsiusMaterializer(BaseMaterializer):
    """A user materializer registered for its type by ASSOCIATED_TYPES."""

    ASSOCIATED_TYPES = (Celsius,)

    def save(self, data: Celsius) -> None:
        self._write("celsius.txt", f"{data.degrees}C".encode())

    def load(self, data_type: type) -> Celsius:
        return Celsius(float(self._read("celsius.txt").decode().rstrip("C")))

    def extract_metadata(self, data: Celsius) -> dict[str, Any]:
        return {"degrees": data.degrees, "unit": "C"}


class UpperTextMaterializer(BaseMaterializer):
    """A user materializer chosen per output (no ASSOCIATED_TYPES: not registered for str)."""

    def save(self, data: str) -> None:
        with self.artifact_store.open(self.path("text.upper"), "wb") as f:
            f.write(data.upper().encode())

    def load(self, data_type: type) -> str:
        return self._read("text.upper").decode().lower()

    def extract_metadata(self, data: str) -> dict[str, Any]:
        return {"custom": True}


def roundtrip(value_factory: Any, annotation: Any = Any) -> Any:
    """Run a one-step pipeline returning ``value_factory()``; return (stored version, loaded in body)."""
    loaded: dict[str, Any] = {}

    def produce():
        return value_factory()

    produce.__annotations__["return"] = annotation
    s = step(produce)

    @pipeline(dynamic=True, enable_cache=False)
    def materialize() -> None:
        artifact = s()
        loaded["value"] = artifact.load()
        loaded["id"] = artifact.id

    materialize()
    return Client().get_artifact_version(loaded["id"]), loaded["value"]


@pytest.mark.parametrize(
    ("value", "materializer", "data_type"),
    [
        (None, "NoneMaterializer", "builtins:NoneType"),
        (True, "BuiltInMaterializer", "builtins:bool"),
        (42, "BuiltInMaterializer", "builtins:int"),
        (2.5, "BuiltInMaterializer", "builtins:float"),
        ("hello", "BuiltInMaterializer", "builtins:str"),
        (b"\x00\x01raw", "BytesMaterializer", "builtins:bytes"),
        ({"a": [1, 2], "b": {"c": None}}, "DictMaterializer", "builtins:dict"),
        ({"when": {1, 2}}, "CloudpickleMaterializer", "builtins:dict"),  # not JSON-able: pickled, and says so
        ({1: "int keys", "t": (1, 2)}, "CloudpickleMaterializer", "builtins:dict"),  # JSON would change it
        ([1, "two", 3.0, None], "SequenceMaterializer", "builtins:list"),
        ([{1, 2}, Opaque(3)], "PickledSequenceMaterializer", "builtins:list"),  # not JSON-able
        ((1, "a"), "SequenceMaterializer", "builtins:tuple"),
        ([(1, 2), {3: 4}], "PickledSequenceMaterializer", "builtins:list"),  # JSON would change it
        (Colour.RED, "BuiltInMaterializer", "test_materializers:Colour"),
        (Mode.FAST, "BuiltInMaterializer", "test_materializers:Mode"),
        (Point(x=1, y=2.5), "PydanticMaterializer", "test_materializers:Point"),
        (Config("net", [3, 4]), "DataclassMaterializer", "test_materializers:Config"),
        (Holder({1, 2}), "CloudpickleMaterializer", "test_materializers:Holder"),
        (Nested(Config("n", [1]), (1, 2)), "CloudpickleMaterializer", "test_materializers:Nested"),
        (Opaque(7), "CloudpickleMaterializer", "test_materializers:Opaque"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) or ":" not in v else None,
)
def test_values_round_trip_and_record_their_materializer(value: Any, materializer: str, data_type: str) -> None:
    version, in_body = roundtrip(lambda: value)

    assert version.materializer == M + materializer
    assert version.data_type.rsplit(":", 1)[1] == data_type.rsplit(":", 1)[1]
    for loaded in (in_body, version.load()):
        assert loaded == value
        assert type(loaded) is type(value)
    assert Path(version.uri).is_dir() and any(Path(version.uri).iterdir())


def test_builtins_are_stored_as_readable_json() -> None:
    version, _ = roundtrip(lambda: {"a": 1})
    assert json.loads((Path(version.uri) / "data.json").read_text()) == {"a": 1}
    assert version.metadata == {"length": 1}
    version, _ = roundtrip(lambda: 3)
    assert (Path(version.uri) / "data.json").read_text() == "3"


def test_numpy_arrays_round_trip_with_shape_metadata() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    version, in_body = roundtrip(lambda: array)

    assert version.materializer == M + "NumpyMaterializer"
    assert version.data_type == "numpy:ndarray"
    assert version.metadata == {"shape": [3, 4], "dtype": "float32"}
    assert version.item_count == 3
    assert (version.content_hash, version.size) == expected_digest(Path(version.uri))
    for loaded in (in_body, version.load()):
        np.testing.assert_array_equal(loaded, array)
        assert loaded.dtype == np.float32


def test_pandas_dataframes_round_trip_with_columns_metadata() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    version, in_body = roundtrip(lambda: frame)

    assert version.materializer == M + "PandasMaterializer"
    assert version.data_type.endswith(":DataFrame")
    assert version.metadata == {"rows": 3, "columns": ["a", "b"]}
    assert (version.content_hash, version.size) == expected_digest(Path(version.uri))
    for loaded in (in_body, version.load()):
        pd.testing.assert_frame_equal(loaded, frame)
    series_version, series = roundtrip(lambda: frame["a"])
    assert series_version.materializer == M + "PandasMaterializer"
    pd.testing.assert_series_equal(series, frame["a"])


def test_unserialisable_output_is_a_clear_materializer_error() -> None:
    @step
    def locked() -> Any:
        return threading.Lock()

    caught: list[BaseException] = []

    @pipeline(dynamic=True)
    def unpicklable() -> None:
        try:
            locked()
        except Exception as exc:
            caught.append(exc)

    unpicklable()  # the body handled the failure
    [exc] = caught
    assert isinstance(exc.original_exception, MaterializerError)
    message = str(exc.original_exception)
    assert "'locked'" in message and "'output'" in message and "lock" in message
    step_run = Client().list_pipeline_runs()[0].steps["locked"]
    assert step_run.status == ExecutionStatus.FAILED
    assert step_run.error["type"] == "MaterializerError"


def test_user_materializer_registered_by_type(home: Path) -> None:
    @step
    def temperature() -> Celsius:
        return Celsius(21.5)

    @step
    def warmer(t: Celsius) -> float:
        return t.degrees + 1

    @pipeline(dynamic=True)
    def weather() -> None:
        warmer(temperature())

    run = weather()

    version = run.steps["temperature"].output
    assert version.materializer == "test_materializers:CelsiusMaterializer"
    assert (Path(version.uri) / "celsius.txt").read_text() == "21.5C"
    assert version.metadata == {"degrees": 21.5, "unit": "C"}
    assert version.load().degrees == 21.5
    assert run.steps["warmer"].output.load() == 22.5


def test_user_materializer_chosen_per_output() -> None:
    @step(output_materializers={"shout": UpperTextMaterializer})
    def words() -> tuple[Annotated[str, "shout"], Annotated[str, "plain"]]:
        return "hello", "world"

    @step(output_materializers=UpperTextMaterializer)
    def one() -> str:
        return "single"

    @step
    def echo(text: str) -> str:
        return text

    @pipeline(dynamic=True)
    def chosen() -> None:
        shout, _ = words()
        echo(shout)
        one()

    run = chosen()

    outs = run.steps["words"].outputs
    assert outs["shout"][0].materializer == "test_materializers:UpperTextMaterializer"
    assert (Path(outs["shout"][0].uri) / "text.upper").read_text() == "HELLO"
    assert outs["shout"][0].metadata == {"custom": True}
    assert outs["plain"][0].materializer == M + "BuiltInMaterializer"
    assert run.steps["echo"].output.load() == "hello"
    assert run.steps["one"].output.materializer == "test_materializers:UpperTextMaterializer"
    assert run.steps["words"].config["output_materializers"] == {
        "shout": "test_materializers:UpperTextMaterializer"
    }


def test_output_materializers_as_a_list_follow_output_order() -> None:
    @step(output_materializers=[UpperTextMaterializer, CelsiusMaterializer])
    def pair() -> tuple[str, Celsius]:
        return "abc", Celsius(1.0)

    @pipeline(dynamic=True)
    def listed() -> None:
        pair()

    outs = listed().steps["pair"].outputs
    assert outs["output_0"][0].materializer == "test_materializers:UpperTextMaterializer"
    assert outs["output_0"][0].load() == "abc"
    assert outs["output_1"][0].materializer == "test_materializers:CelsiusMaterializer"


def test_output_materializers_must_be_materializer_classes() -> None:
    from unspool import StepDefinitionError

    with pytest.raises(StepDefinitionError, match="BaseMaterializer subclasses"):
        step(output_materializers="json")(lambda: 1)
    with pytest.raises(StepDefinitionError, match="BaseMaterializer subclasses"):
        step(output_materializers={"output": dict})(lambda: 1)


@pytest.mark.parametrize(
    "items", [[10, "b", None, {"k": 1}], [{1}, Opaque(2), b"x"], ("t", 1)], ids=["json", "pickle", "tuple"]
)
def test_sequence_materializer_load_item_reads_one_element(tmp_path: Path, items: Any) -> None:
    store = ArtifactStore(str(tmp_path))
    uri = str(tmp_path / "seq")
    writer = SequenceMaterializer(uri, store)
    writer.save(items)

    reader = writer.stored_with(uri, store)  # PickledSequenceMaterializer for the pickled items
    assert [reader.load_item(i) for i in range(len(items))] == list(items)
    assert reader.load_item(-1) == items[-1]
    with pytest.raises(IndexError, match="out of range"):
        reader.load_item(len(items))
    assert reader.load(type(items)) == items


def test_load_item_does_not_read_the_other_elements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(str(tmp_path))
    uri = str(tmp_path / "seq")
    big = ["x" * 10_000 for _ in range(50)] + ["needle"]
    SequenceMaterializer(uri, store).save(big)

    read_sizes: list[int] = []
    real_open = store.open

    def counting_open(path: str, mode: str = "rb") -> Any:
        f = real_open(path, mode)
        real_read = f.read

        def read(n: int = -1) -> bytes:
            data = real_read(n)
            read_sizes.append(len(data))
            return data

        f.read = read
        return f

    monkeypatch.setattr(store, "open", counting_open)
    assert SequenceMaterializer(uri, store).load_item(50) == "needle"
    assert sum(read_sizes) < 1_000  # meta, two offsets and one element, not 500 kB


def test_builtin_inputs_convert_to_the_annotation_only_without_loss() -> None:
    seen: dict[str, Any] = {}

    @step
    def numbers() -> tuple[int, float]:
        return 3, 2.5

    @step
    def as_float(x: float, y: int) -> None:
        seen["x"], seen["y"] = x, y

    @pipeline(dynamic=True)
    def converting() -> None:
        three, two_and_a_half = numbers()
        as_float(three, two_and_a_half)

    converting()
    assert seen == {"x": 3.0, "y": 2.5}
    assert type(seen["x"]) is float  # 3 -> 3.0 is lossless
    assert type(seen["y"]) is float  # 2.5 is not truncated to 2


def test_a_pydantic_artifact_whose_model_cannot_be_imported_loads_as_a_dict() -> None:
    import pydantic

    from unspool import Client, pipeline, step

    gone = pydantic.create_model("Gone", x=(int, ...), __module__="no_such_module_anywhere")

    @step
    def make() -> Any:
        return gone(x=3)

    @pipeline(dynamic=True)
    def p() -> None:
        make()

    run = p()
    artifact = run.steps["make"].outputs["output"][0]
    assert artifact.data_type == "no_such_module_anywhere:Gone"
    assert Client().get_artifact_version(artifact.name).load() == {"x": 3}


class MyObj:
    def __init__(self, name: str) -> None:
        self.name = name


class MyMaterializer(BaseMaterializer):
    """Written as in the ZenML docs: text-mode files through self.artifact_store.open."""

    ASSOCIATED_TYPES = (MyObj,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    def load(self, data_type: Type[MyObj]) -> MyObj:
        with self.artifact_store.open(os.path.join(self.uri, "data.txt"), "r") as f:
            name = f.read()
        return MyObj(name=name)

    def save(self, my_obj: MyObj) -> None:
        with self.artifact_store.open(os.path.join(self.uri, "data.txt"), "w") as f:
            f.write(my_obj.name)


def test_a_materializer_written_as_in_the_zenml_docs_works_with_text_mode_files() -> None:
    @step(output_materializers=MyMaterializer)
    def my_first_step() -> MyObj:
        return MyObj("my_object ünïcode")

    @step
    def my_second_step(my_obj: MyObj) -> str:
        return my_obj.name

    @pipeline(dynamic=True)
    def first_pipeline() -> None:
        my_second_step(my_first_step())

    run = first_pipeline()
    produced = run.steps["my_first_step"].output
    assert produced.materializer.endswith(":MyMaterializer")
    assert produced.load().name == "my_object ünïcode"
    assert run.steps["my_second_step"].output.load() == "my_object ünïcode"
    assert (Path(produced.uri) / "data.txt").read_text(encoding="utf-8") == "my_object ünïcode"
    assert first_pipeline().steps["my_first_step"].status.value == "cached"  # content hashed


class Note:
    def __init__(self, text: str) -> None:
        self.text = text


class NoteMaterializer(BaseMaterializer):
    """Written with fileio, as ZenML's docs also show."""

    ASSOCIATED_TYPES = (Note,)

    def save(self, data: Note) -> None:
        from unspool import fileio

        fileio.makedirs(self.uri)
        with fileio.open(os.path.join(self.uri, "note.txt"), "w") as f:
            f.write(data.text)

    def load(self, data_type: type) -> Note:
        from unspool import fileio

        assert fileio.exists(os.path.join(self.uri, "note.txt"))
        assert fileio.listdir(self.uri) == ["note.txt"]
        with fileio.open(os.path.join(self.uri, "note.txt"), "r") as f:
            return Note(f.read())


def test_a_materializer_using_fileio_as_in_the_zenml_docs() -> None:
    @step(output_materializers=NoteMaterializer)
    def write_note() -> Note:
        return Note("hello")

    @pipeline(dynamic=True)
    def notes() -> None:
        write_note()

    run = notes()
    produced = run.steps["write_note"].output
    assert produced.load().text == "hello"
    assert produced.size == 5 and produced.content_hash
