"""Issue 13 (trust): names never become paths, pickle said out loud, damaged artifacts,
exposure of a local Ray instance and of secrets, readers never wait behind writers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest

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
    long_name = "n" * 245  # the longest step name the metadata store takes

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


def _load_as_recorded(version: Any, index: int | None = None) -> Any:
    """Load through the recorded materializer without the size check (a planted file of the
    recorded size would pass it): the materializer itself must refuse to unpickle."""
    from unspool._artifact_io import ArtifactRef, artifact_store_for, load_artifact

    ref = ArtifactRef(version.uri, version.materializer, version.data_type, index)
    return load_artifact(artifact_store_for(version.artifact_store_url), ref)


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
        _load_as_recorded(versions["plain"])
    list_dir = Path(versions["plain_list"].uri)
    blob = pickle.dumps(Trap(str(marker)))
    (list_dir / "items.bin").write_bytes(blob + blob)
    (list_dir / "offsets.bin").write_bytes(b"".join(o.to_bytes(8, "little") for o in (0, len(blob), 2 * len(blob))))
    (list_dir / "meta.json").write_text(json.dumps({"codec": "pickle", "count": 2, "container": "list"}))
    with pytest.raises(MaterializerError, match="not unpickled"):
        _load_as_recorded(versions["plain_list"])
    with pytest.raises(MaterializerError, match="not unpickled"):
        _load_as_recorded(versions["plain_list"], 0)
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


# -- 6. deleted or altered artifacts ----------------------------------------------------------------


@step
def source_numbers() -> Annotated[list, "numbers"]:
    return [1, 2, 3]


@step
def total(values: list) -> Annotated[int, "total"]:
    return sum(values)


@pipeline
def summed() -> None:
    total(source_numbers())


def test_a_cache_hit_whose_files_are_gone_runs_the_step_again() -> None:
    import shutil

    summed()
    first = Client().get_artifact_version("numbers")
    shutil.rmtree(first.uri)

    summed()
    run = Client().list_pipeline_runs(pipeline_name="summed")[0]
    assert {s.name: s.status.value for s in run.steps.values()} == {"source_numbers": "completed", "total": "cached"}
    again = Client().get_artifact_version("numbers")
    assert again.version == 2 and Path(again.uri).is_dir() and again.load() == [1, 2, 3]
    assert run.steps["total"].output.load() == 6


def test_a_load_of_an_artifact_whose_size_changed_names_it(tmp_path: Path) -> None:
    import pytest

    from unspool import ArtifactDamagedError

    summed()
    version = Client().get_artifact_version("total")
    with open(Path(version.uri) / "data.json", "ab") as f:
        f.write(b"0")  # 60: still valid JSON, silently wrong without the check
    with pytest.raises(ArtifactDamagedError, match=r"artifact 'total:1' is damaged: it holds 2 bytes but 1 were"):
        version.load()

    numbers = Client().get_artifact_version("numbers")
    (Path(numbers.uri) / "items.bin").write_bytes(b"")
    with pytest.raises(ArtifactDamagedError, match="'numbers:1' is damaged"):
        numbers.chunk(0).load()


def test_artifacts_verify_rehashes_against_the_recorded_content_hash() -> None:
    from typer.testing import CliRunner

    from unspool._cli import app

    summed()
    runner = CliRunner()
    clean = runner.invoke(app, ["artifacts", "verify"])
    assert clean.exit_code == 0, clean.output
    assert "2 artifact versions checked, 0 damaged" in clean.output

    version = Client().get_artifact_version("total")
    (Path(version.uri) / "data.json").write_bytes(b"7")  # same size, other content
    damaged = runner.invoke(app, ["artifacts", "verify"])
    assert damaged.exit_code == 1
    assert "damaged: total:1" in damaged.output and "content hashes to" in damaged.output
    assert "numbers:1" not in damaged.output
    only_numbers = runner.invoke(app, ["artifacts", "verify", "numbers"])
    assert only_numbers.exit_code == 0 and "1 artifact versions checked, 0 damaged" in only_numbers.output
    assert Client().get_artifact_version("total").verify() is not None


def test_damaged_artifacts_are_found_on_s3_too(s3_store: Any) -> None:
    import pytest

    from unspool import ArtifactDamagedError

    summed()
    numbers = Client().get_artifact_version("numbers")
    client = s3_store.server.client()
    prefix = numbers.uri.split("/", 1)[1] + "/"
    doomed = [k for k in s3_store.object_keys() if k.startswith(prefix)]
    assert doomed
    for key in doomed:
        client.delete_object(Bucket=s3_store.bucket, Key=key)
    with pytest.raises(ArtifactDamagedError, match="'numbers:1' is damaged: its files are gone"):
        numbers.load()

    summed()
    run = Client().list_pipeline_runs(pipeline_name="summed")[0]
    assert run.steps["source_numbers"].status.value == "completed"
    again = Client().get_artifact_version("numbers")
    assert again.version == 2 and again.load() == [1, 2, 3] and again.verify() is None


# -- 8. a local Ray instance listens on loopback only -------------------------------------------------

OWN_RAY = '''
import ipaddress, json, os, sys
from unspool import pipeline, step

@step(runtime="isolated", enable_cache=False)
def remote_pid() -> int:
    return os.getpid()

@pipeline(dynamic=True, orchestrator={"type": "ray", "num_cpus": 1})
def own_ray():
    assert remote_pid().load() != os.getpid()

def descendants(root):
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(pid))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found

def listening(pids):
    """(process name, address) of every listening TCP socket the processes hold."""
    owner = {}
    for pid in pids:
        try:
            name = open(f"/proc/{pid}/comm").read().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    owner[link[8:-1]] = name
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in owner:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(raw)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            out.append((owner[fields[9]], str(address)))
    return out

if __name__ == "__main__":
    assert own_ray().status.value == "completed"
    with open(sys.argv[1], "w") as f:
        json.dump(listening(descendants(os.getpid())), f)
'''


def test_a_local_ray_instance_unspool_starts_listens_on_loopback_only(tmp_path: Path, home: Path) -> None:
    import ipaddress
    import json
    import subprocess
    import sys

    from _ray_support import import_ray

    import_ray()
    script = tmp_path / "own_ray.py"
    script.write_text(OWN_RAY)
    report = tmp_path / "listening.json"
    env = {**os.environ, "UNSPOOL_HOME": str(home), "UNSPOOL_PROGRESS": "off"}
    proc = subprocess.run([sys.executable, str(script), str(report)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sockets = json.loads(report.read_text())
    names = {name for name, _ in sockets}
    assert "gcs_server" in names and "raylet" in names, sockets
    exposed = [(name, address) for name, address in sockets if not ipaddress.ip_address(address).is_loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"


# -- 9. secrets in output -----------------------------------------------------------------------------


def test_store_passwords_are_masked_in_init_and_in_the_newer_schema_error(pg_url: str) -> None:
    import sqlalchemy as sa
    from typer.testing import CliRunner

    from _servers import PG_PASSWORD
    from unspool._cli import app
    from unspool.testing import reset_stores

    runner = CliRunner()
    init = runner.invoke(app, ["init"])
    assert init.exit_code == 0, init.output
    assert PG_PASSWORD not in init.output and "metadata store: postgresql+psycopg://unspool:***@" in init.output
    reset_stores()

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (999, 0)"))
    engine.dispose()
    listed = runner.invoke(app, ["runs", "list"])
    assert listed.exit_code == 2
    assert "schema version 999" in listed.output and PG_PASSWORD not in listed.output
    from unspool import StoreError
    from unspool._metadata_store import MetadataStore

    try:
        MetadataStore(pg_url)
    except StoreError as exc:
        assert "schema version 999" in str(exc) and PG_PASSWORD not in str(exc)
    else:
        raise AssertionError("a store with a newer schema opened")


def test_every_cli_error_line_masks_url_passwords(monkeypatch: Any) -> None:
    from typer.testing import CliRunner

    from unspool._cli import app
    from unspool._errors import mask_secrets

    assert mask_secrets("at s3://AKIA:se/cret@b and postgresql://u:p%40ss@h:5/db") == (
        "at s3://AKIA:***@b and postgresql://u:***@h:5/db"
    )
    assert mask_secrets("redis://:hunter2@h/0 x://a:b@c") == "redis://:***@h/0 x://a:***@c"
    monkeypatch.setenv("UNSPOOL_STORE_URL", "mysql://admin:hunter2@127.0.0.1:1/db")
    failed = CliRunner().invoke(app, ["runs", "list"])
    assert failed.exit_code == 2 and "hunter2" not in failed.output and "admin:***@" in failed.output


def test_trigger_passes_the_run_configuration_privately(tmp_path: Path, home: Path, monkeypatch: Any) -> None:
    import importlib
    import sys

    from unspool import _snapshots

    gate = tmp_path / "gate"
    project = tmp_path / "project"
    project.mkdir()
    (project / "secret_flows.py").write_text(
        "import os, time\n"
        "from unspool import pipeline, step\n\n"
        "@step(enable_cache=False)\n"
        "def wait_for(gate: str, token: str) -> int:\n"
        "    while not os.path.exists(gate):\n"
        "        time.sleep(0.01)\n"
        "    return len(token)\n\n"
        "@pipeline\n"
        "def guarded(gate: str, token: str) -> None:\n"
        "    wait_for(gate, token)\n"
    )
    monkeypatch.syspath_prepend(str(project))
    flows = importlib.import_module("secret_flows")
    try:
        flows.guarded.create_snapshot("guarded")
        secret = "tok-3f9c1a2b-never-on-a-command-line"
        run = Client().trigger_pipeline(
            "guarded", run_configuration={"parameters": {"gate": str(gate), "token": secret}}, wait=False
        )
        [proc] = [p for p in _snapshots._background if p.poll() is None]
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"unspool._trigger" in cmdline and secret.encode() not in cmdline
        leftovers = [p for p in (home / "triggers").iterdir() if secret in p.read_text(errors="replace")]
        assert not leftovers, leftovers
        gate.touch()
        assert proc.wait(timeout=120) == 0
        assert Client().get_pipeline_run(run.id).steps["wait_for"].output.load() == len(secret)
    finally:
        gate.touch()
        sys.modules.pop("secret_flows", None)


def test_new_stores_are_readable_by_their_owner_only(home: Path) -> None:
    import stat

    assert not home.exists()
    summed()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (home, home / "artifacts", home / "unspool.db")}
    assert modes == {home.name: 0o700, "artifacts": 0o700, "unspool.db": 0o600}
    wal = home / "unspool.db-wal"
    if wal.exists():
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600


# -- 10. readers never wait behind writers --------------------------------------------------------------


def test_opening_an_up_to_date_store_takes_no_write_lock(home: Path) -> None:
    import sqlite3
    import subprocess
    import sys

    from unspool.testing import reset_stores

    summed()
    run = Client().list_pipeline_runs(pipeline_name="summed")[0]
    reset_stores()
    writer = sqlite3.connect(home / "unspool.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # another process's write transaction, held open
        writer.execute("UPDATE pipeline_runs SET name = name")
        env = {**os.environ, "UNSPOOL_HOME": str(home), "UNSPOOL_PROGRESS": "off"}
        listed = subprocess.run([sys.executable, "-m", "unspool", "runs", "list"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert run.name in listed.stdout
        assert writer.in_transaction
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# -- 4. bookkeeping that fails never leaves a run waiting ------------------------------------------------


@pytest.mark.timeout(120)
def test_a_log_that_cannot_be_written_fails_its_step_and_the_run_ends(monkeypatch: Any) -> None:
    from unspool import UnspoolError
    from unspool._artifact_store import ArtifactStore as Store

    def full(self: Any, path: str, text: str) -> None:
        raise OSError(28, "No space left on device")

    @step(enable_cache=False)
    def chatty() -> int:
        print("a line for the log")
        return 1

    @step(enable_cache=False)
    def after(x: int) -> int:
        return x + 1

    @pipeline(dynamic=True)
    def logged() -> None:
        after(chatty()).load()  # the body thread runs chatty itself: it used to wait forever

    monkeypatch.setattr(Store, "append_text", full)
    with pytest.raises(UnspoolError, match="could not be written"):
        logged()
    run = Client().list_pipeline_runs(pipeline_name="logged")[0]
    assert run.status.value == "failed"
    assert run.steps["chatty"].status.value == "failed"
    assert all(s.status.value in ("failed", "skipped") for s in run.steps.values())
    assert "could not be written" in run.steps["chatty"].error["message"]
    assert "No space left on device" in run.steps["chatty"].error["message"]


def test_an_output_named_log_and_a_nul_in_a_step_name_do_not_break_bookkeeping() -> None:
    @step(name="tab\tand\0nul", enable_cache=False)
    def oddly_named() -> Annotated[int, "log"]:
        print("to the log")
        return 5

    @pipeline
    def odd() -> None:
        oddly_named()

    odd()
    run = Client().list_pipeline_runs(pipeline_name="odd")[0]
    step_run = run.steps["tab\tand\0nul"]
    assert run.status.value == "completed" and step_run.status.value == "completed"
    assert step_run.outputs["log"][0].load() == 5 and "to the log" in step_run.logs


def test_a_run_whose_setup_fails_ends_failed_at_once(home: Path) -> None:
    import shutil

    from unspool.testing import current_stores

    env = current_stores()
    root = Path(env.artifact_root)
    shutil.rmtree(root)
    root.write_text("not a folder")  # the run's artifact folder cannot be created

    @pipeline
    def unstartable() -> None:
        source_numbers()

    with pytest.raises(OSError):
        unstartable()
    [run] = Client().list_pipeline_runs(pipeline_name="unstartable")
    assert run.status.value == "failed" and "could not start" in run.error["message"]
    assert run.id not in env.metadata._beating


def test_a_child_pipeline_recursing_without_end_ends_every_run(monkeypatch: Any) -> None:
    from unspool import PipelineError, _budget

    monkeypatch.setattr(_budget, "MAX_CHILD_DEPTH", 4)

    @step
    def one() -> int:
        return 1

    @pipeline(dynamic=True)
    def forever(depth: int = 0) -> None:
        one()
        forever(depth + 1)

    with pytest.raises(PipelineError, match="would run 5 levels deep"):
        forever()
    runs = Client().list_pipeline_runs(pipeline_name="forever")
    assert len(runs) == 5 and {r.status.value for r in runs} == {"failed"}  # the root and 4 levels
