"""Issue 13 (trust): names never become paths, pickle said out loud, damaged artifacts,
exposure of a local Ray instance and of secrets, readers never wait behind writers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import numpy as np

from unspool import ArtifactConfig, Client, pipeline, step
from unspool._artifact_store import ArtifactStore, path_segment

# -- 5. names never become paths ------------------------------------------------------------------


def _all_files(top: Path) -> set[Path]:
    return {p for p in top.rglob("*") if p.is_file()}


def test_hostile_names_stay_inside_the_run_folder_and_never_collide(home: Path, tmp_path: Path) -> None:
    artifacts = home / "artifacts"
    victim = artifacts / "VICTIM"  # where ArtifactConfig(name="/../../VICTIM") used to land
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("not unspool's")
    outside = tmp_path / "absolute-target"  # a step named by an absolute path
    long_name = "n" * 250

    @step(name="../../../escaped")
    def climb() -> int:
        return 1

    @step(name=str(outside))
    def absolute() -> int:
        return 2

    @step
    def annotated() -> Annotated[int, "/../../x"]:
        return 3

    @step
    def configured() -> Annotated[int, ArtifactConfig(name="/../../VICTIM")]:
        return 4

    @step(name="train")
    def train_a() -> Annotated[int, "model.v1"]:
        return 5

    @step(name="train.model")
    def train_b() -> Annotated[int, "v1"]:
        return 6

    @step(name=long_name)
    def long() -> Annotated[int, "o" * 250]:
        print("a log line")
        return 7

    @step(name="nul\0step")
    def nul() -> Annotated[int, "out\0put"]:
        return 8

    @pipeline
    def hostile() -> None:
        climb()
        absolute()
        annotated()
        configured()
        train_a()
        train_b()
        long()
        nul()

    before = _all_files(tmp_path)
    hostile()

    run = Client().list_pipeline_runs(pipeline_name="hostile")[0]
    run_folder = (artifacts / run.id).resolve()
    written = _all_files(tmp_path) - before
    # allowed: the run's folder, and the metadata store (in the home folder, outside the artifacts)
    strays = [p for p in written if run_folder not in p.resolve().parents
              and (home not in p.parents or artifacts in p.resolve().parents or artifacts == p.parent)]
    assert not strays, f"files written outside the run's folder: {strays}"
    assert (victim / "keep.txt").read_text() == "not unspool's"
    assert not outside.exists()
    for p in run_folder.rglob("*"):
        assert len(p.name.encode()) <= 120, p

    # names are kept as given in the metadata store; every value comes back from its own location
    steps = {s.name: s for s in run.steps.values()}
    expected = {
        "../../../escaped": ("output", 1), str(outside): ("output", 2), "annotated": ("/../../x", 3),
        "configured": ("/../../VICTIM", 4), "train": ("model.v1", 5), "train.model": ("v1", 6),
        long_name: ("o" * 250, 7), "nul\0step": ("out\0put", 8),
    }
    assert set(steps) == set(expected)
    uris = set()
    for name, (output, value) in expected.items():
        version = steps[name].outputs[output][0]
        assert version.load() == value, name
        assert run_folder in Path(version.uri).resolve().parents, version.uri
        uris.add(version.uri)
    assert len(uris) == len(expected)
    assert "a log line" in steps[long_name].logs
    assert run_folder in Path(steps[long_name].logs_uri).resolve().parents


def test_one_function_maps_names_to_locations_for_every_store() -> None:
    local = ArtifactStore.__new__(ArtifactStore)
    local.root, local.is_local = "/store", True
    remote = ArtifactStore.__new__(ArtifactStore)
    remote.root, remote.is_local = "bucket/prefix", False
    for store, sep in ((local, os.sep), (remote, "/")):
        a = store.location("r1", "train", "model.v1")
        b = store.location("r1", "train.model", "v1")
        assert a != b
        assert store.location("r1", "s", "log") != store.location("r1", "s")
        assert store.location("r1", "s", "o.attempt2") != store.location("r1", "s", "o", attempt=2)
        for path in (a, b, store.location("r1", "/../..", "/../../x"), store.location("r1", "..", "..")):
            rel = path[len(store.root) + 1:]
            assert path.startswith(store.root + sep) and ".." not in rel.split(sep), path
    assert path_segment("train") == "train"
    assert path_segment("Train") != path_segment("train")  # case-insensitive filesystems
    assert len(path_segment("x" * 10_000)) < 80


# -- 7. pickle is said out loud ---------------------------------------------------------------------

M = "unspool._materializers:"


class Trap:
    """Unpickling it creates the file ``path``: proof that stored code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_pickled_values_are_recorded_as_pickled_and_json_records_never_unpickle(tmp_path: Path) -> None:
    import json
    import pickle

    import pytest

    from unspool import MaterializerError

    @step
    def int_keys() -> Annotated[dict, "int_keys"]:
        return {1: "a"}

    @step
    def tuples() -> Annotated[list, "tuples"]:
        return [(1, 2), (3, 4)]

    @step
    def plain() -> Annotated[dict, "plain"]:
        return {"a": 1}

    @step
    def plain_list() -> Annotated[list, "plain_list"]:
        return [1, 2]

    @step
    def first(pair: tuple) -> int:
        return pair[0]

    @pipeline(dynamic=True)
    def pickles() -> None:
        int_keys()
        first.map(tuples())
        plain()
        plain_list()

    run = pickles()
    client = Client()
    versions = {n: client.get_artifact_version(n) for n in ("int_keys", "tuples", "plain", "plain_list")}
    assert versions["int_keys"].materializer == M + "CloudpickleMaterializer"
    assert versions["tuples"].materializer == M + "PickledSequenceMaterializer"
    assert versions["plain"].materializer == M + "DictMaterializer"
    assert versions["plain_list"].materializer == M + "SequenceMaterializer"
    assert [versions[n].stored_format for n in versions] == ["pickle", "pickle", "json", "json"]
    assert versions["int_keys"].load() == {1: "a"}
    assert sorted(s.output.load() for s in run.steps.values() if s.name == "first") == [1, 3]

    # a version recorded as JSON whose files were replaced by pickles is never unpickled
    marker = tmp_path / "unpickled"
    plain_dir = Path(versions["plain"].uri)
    (plain_dir / "data.json").unlink()
    (plain_dir / "data.pkl").write_bytes(pickle.dumps(Trap(str(marker))))
    with pytest.raises(MaterializerError, match="not loaded"):
        versions["plain"].load()
    list_dir = Path(versions["plain_list"].uri)
    blob = pickle.dumps(Trap(str(marker)))
    (list_dir / "items.bin").write_bytes(blob + blob)
    (list_dir / "offsets.bin").write_bytes(b"".join(o.to_bytes(8, "little") for o in (0, len(blob), 2 * len(blob))))
    (list_dir / "meta.json").write_text(json.dumps({"codec": "pickle", "count": 2, "container": "list"}))
    with pytest.raises(MaterializerError, match="not unpickled"):
        versions["plain_list"].load()
    with pytest.raises(MaterializerError, match="not unpickled"):
        versions["plain_list"].chunk(0).load()
    assert not marker.exists()


def test_numpy_object_arrays_are_recorded_as_pickled() -> None:
    @step
    def objects() -> Annotated[np.ndarray, "objects"]:
        return np.array([{"a": 1}, None], dtype=object)

    @step
    def floats() -> Annotated[np.ndarray, "floats"]:
        return np.arange(3.0)

    @pipeline
    def arrays() -> None:
        objects()
        floats()

    arrays()
    client = Client()
    assert client.get_artifact_version("objects").materializer == M + "CloudpickleMaterializer"
    assert client.get_artifact_version("objects").load().tolist() == [{"a": 1}, None]
    assert client.get_artifact_version("floats").materializer == M + "NumpyMaterializer"
    assert client.get_artifact_version("floats").stored_format == "npy"


def test_artifacts_show_loads_pickled_data_only_with_load(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unspool._cli import app

    marker = tmp_path / "unpickled"

    @step
    def trapped() -> Annotated[dict, "trapped"]:
        return {1: Trap(str(marker))}

    @pipeline
    def trap_flow() -> None:
        trapped()

    trap_flow()
    runner = CliRunner()
    shown = runner.invoke(app, ["artifacts", "show", "trapped"])
    assert shown.exit_code == 0, shown.output
    assert not marker.exists()
    assert "CloudpickleMaterializer" in shown.output and "--load" in shown.output
    loaded = runner.invoke(app, ["artifacts", "show", "trapped", "--load"])
    assert loaded.exit_code == 0, loaded.output
    assert marker.exists()
