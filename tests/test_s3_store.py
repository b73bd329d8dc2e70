"""The artifact store on S3 (``UNSPOOL_ARTIFACT_STORE=s3://bucket/prefix``), against moto's
S3-compatible server on loopback (``UNSPOOL_S3_ENDPOINT_URL``; see ``_servers.py``).

On an object store nothing is renamed: a materializer writes into a new, unique key and the
version becomes visible only through the metadata row recorded after the last byte. Logs are
objects rewritten whole; everything loads back from a fresh process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from _servers import S3Store, free_port, start_s3_server, unavailable, use_aws_test_env
from unspool import (
    BaseMaterializer,
    Client,
    ExecutionStatus,
    StepRetryConfig,
    StoreError,
    pipeline,
    step,
)
from unspool.testing import reset_stores


def _content_hash(store: S3Store, uri: str) -> tuple[str, int]:
    """The documented digest, recomputed from the objects under ``uri`` (bucket/key...)."""
    client = store.server.client()
    prefix = uri.split("/", 1)[1].rstrip("/") + "/"
    total, size = hashlib.sha256(), 0
    for key in (k for k in store.object_keys() if k.startswith(prefix)):
        data = client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
        total.update(key[len(prefix):].encode() + b"\0" + hashlib.sha256(data).digest())
        size += len(data)
    return total.hexdigest(), size


# -- end to end ---------------------------------------------------------------------------------------


def test_pipeline_runs_with_every_artifact_and_log_on_s3(s3_store: S3Store, home: Path) -> None:
    @step
    def count() -> int:
        print("counting")
        return 3

    @step
    def rows(n: int) -> list:
        return [{"row": i} for i in range(n)]

    @step
    def total(items: list) -> int:
        print(f"summing {len(items)}")
        return sum(item["row"] for item in items)

    @pipeline(dynamic=True)
    def on_s3() -> None:
        total(rows(count()))

    run = on_s3()

    assert run.status == ExecutionStatus.COMPLETED
    assert run.steps["total"].output.load() == 3
    assert run.steps["rows"].output.load() == [{"row": 0}, {"row": 1}, {"row": 2}]
    # Logs are objects in the bucket; StepRun.logs reads them from there.
    assert run.steps["count"].logs == "counting\n"
    assert run.steps["total"].logs == "summing 3\n"
    logs_uri = run.steps["count"].logs_uri
    assert logs_uri.startswith(f"{s3_store.bucket}/artifacts/{run.id}/") and logs_uri.endswith(".log")
    assert logs_uri.split("/", 1)[1] in s3_store.object_keys()
    versions = Client().list_artifact_versions()
    assert len(versions) == 3
    for version in versions:
        assert version.uri.startswith(f"{s3_store.bucket}/artifacts/{run.id}/")
        assert (version.content_hash, version.size) == _content_hash(s3_store, version.uri)
    # Nothing was written to the local disk.
    assert not (home / "artifacts").exists()


def test_outputs_are_written_once_under_a_unique_key_never_renamed(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    def no_rename(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an object store must not be renamed into place (copy + delete is not atomic)")

    monkeypatch.setattr(s3fs.S3FileSystem, "mv", no_rename)
    monkeypatch.setattr(s3fs.S3FileSystem, "copy", no_rename)

    @step
    def make() -> dict:
        return {"a": 1}

    @pipeline
    def unique_keys() -> None:
        make()

    first = unique_keys().steps["make"].output
    reset_stores()
    second_run = unique_keys.with_options(enable_cache=False)()
    second = second_run.steps["make"].output
    # Each version has its own key: the intended path plus a random suffix...
    assert re.fullmatch(rf"{s3_store.bucket}/artifacts/{first.run_id}/.+-[0-9a-f]{{8}}", first.uri)
    assert second.uri != first.uri
    # ...and nothing ever appears at the predictable path, where a reader could find it early.
    for uri in (first.uri, second.uri):
        intended = uri.split("/", 1)[1].rsplit("-", 1)[0]
        assert not [k for k in s3_store.object_keys() if k.startswith(intended + "/")]
        assert [k for k in s3_store.object_keys() if k.startswith(uri.split("/", 1)[1] + "/")]
    assert not [k for k in s3_store.object_keys() if ".staging-" in k or ".tmp-" in k]
    assert second.load() == first.load() == {"a": 1}


class HalfWritingMaterializer(BaseMaterializer):
    """Writes one file, then fails: the partial artifact must never become visible."""

    def save(self, data: Any) -> None:
        self._write("part-1.bin", b"first half")
        raise RuntimeError("disk full")

    def load(self, data_type: type) -> Any:  # pragma: no cover - never saved
        raise AssertionError


def test_a_failed_save_leaves_no_version_and_no_objects(s3_store: S3Store) -> None:
    @step(output_materializers=HalfWritingMaterializer)
    def produce() -> int:
        return 1

    @step
    def ok() -> int:
        return 2

    @pipeline(dynamic=True)
    def half_written() -> None:
        ok()
        produce()

    with pytest.raises(Exception, match="produce"):
        half_written()

    [run] = Client().list_pipeline_runs()
    assert run.steps["produce"].status == ExecutionStatus.FAILED
    assert "disk full" in run.steps["produce"].error["message"]
    assert [v.name for v in Client().list_artifact_versions()] == ["half_written::ok::output"]
    assert not [k for k in s3_store.object_keys() if "part-1.bin" in k or "produce" in k]


def test_cached_steps_reuse_the_s3_artifacts(s3_store: S3Store) -> None:
    calls: list[int] = []

    @step
    def expensive(x: int) -> list:
        calls.append(x)
        return [x] * 3

    @pipeline
    def cached(x: int = 4) -> None:
        expensive(x)

    first = cached()
    keys = s3_store.object_keys()
    second = cached()

    assert calls == [4]
    step_run = second.steps["expensive"]
    assert step_run.status == ExecutionStatus.CACHED
    assert step_run.output.uri == first.steps["expensive"].output.uri
    assert step_run.output.load() == [4, 4, 4]
    assert s3_store.object_keys() == keys  # a cache hit writes nothing


def test_logs_of_every_attempt_are_kept_on_s3(s3_store: S3Store) -> None:
    attempts: list[int] = []

    @step(retry=StepRetryConfig(max_retries=2, delay=0))
    def flaky() -> int:
        attempts.append(1)
        print(f"attempt {len(attempts)}")
        if len(attempts) < 3:
            raise ValueError("not yet")
        return len(attempts)

    @pipeline
    def retried() -> None:
        flaky()

    run = retried()

    logs = run.steps["flaky"].logs
    assert "attempt 1\n" in logs and "attempt 2\n" in logs and "attempt 3\n" in logs
    assert "--- attempt 2 ---" in logs and "--- attempt 3 ---" in logs
    assert logs.index("attempt 1") < logs.index("attempt 2") < logs.index("attempt 3")


PRODUCER = textwrap.dedent(
    """
    import json, sys
    from unspool import pipeline, step

    @step
    def make(n: int) -> dict:
        print("made in a worker process")
        return {"squares": [i * i for i in range(n)]}

    @step
    def describe(data: dict) -> str:
        return f"{len(data['squares'])} squares"

    @pipeline(dynamic=True)
    def production(n: int = 4) -> None:
        describe(make(n))

    run = production.with_options(orchestrator=json.loads(sys.argv[1]))()
    with open(sys.argv[2], "w") as f:  # not stdout: Ray forwards worker output there at any time
        json.dump({"run": run.id, "status": run.status.value}, f)
    """
)

CONSUMER = textwrap.dedent(
    """
    import json, sys
    from unspool import Client

    run = Client().get_pipeline_run(sys.argv[1])
    with open(sys.argv[2], "w") as f:
        json.dump({
        "make": run.steps["make"].output.load(),
        "describe": run.steps["describe"].output.load(),
        "logs": run.steps["make"].logs,
        "uri": run.steps["make"].output.uri,
    }, f)
    """
)


@pytest.mark.parametrize(
    "orchestrator",
    [{"type": "process"}, {"type": "ray", "all_steps": True, "num_cpus": 1}],
    ids=["process-workers", "ray-tasks"],
)
def test_postgres_and_s3_with_steps_in_workers_and_a_reader_in_a_new_process(
    pg_url: str, s3_store: S3Store, tmp_path: Path, orchestrator: dict[str, Any]
) -> None:
    """The production setup: server metadata store, object store, steps outside the orchestrator.

    With Ray, the steps run as tasks of a local Ray instance started by the producer process;
    its workers reach the bucket through the same environment (endpoint and keys).
    """
    if orchestrator["type"] == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            unavailable("Ray is not installed (pip install -e '.[test]')")
    (tmp_path / "producer.py").write_text(PRODUCER)
    (tmp_path / "consumer.py").write_text(CONSUMER)
    env = {**os.environ, "UNSPOOL_HOME": str(tmp_path / "unused-home")}

    def run(script: str, argument: str) -> dict[str, Any]:
        result = tmp_path / f"{script}.json"
        done = subprocess.run(
            [sys.executable, script, argument, str(result)],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(result.read_text())

    produced = run("producer.py", json.dumps(orchestrator))
    assert produced["status"] == "completed"
    loaded = run("consumer.py", produced["run"])
    assert loaded["make"] == {"squares": [0, 1, 4, 9]}
    assert loaded["describe"] == "4 squares"
    assert loaded["logs"] == "made in a worker process\n"
    assert loaded["uri"].startswith(f"{s3_store.bucket}/artifacts/{produced['run']}/")
    assert not (tmp_path / "unused-home" / "artifacts").exists()


# -- clear errors ---------------------------------------------------------------------------------------


def _store_error(monkeypatch: pytest.MonkeyPatch, url: str) -> str:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a new process would build a new client
    monkeypatch.setenv("UNSPOOL_ARTIFACT_STORE", url)
    reset_stores()
    with pytest.raises(StoreError) as info:
        Client()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_missing_bucket_names_the_setting(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    message = _store_error(monkeypatch, "s3://no-such-bucket-here/artifacts")
    assert "bucket 'no-such-bucket-here' does not exist" in message, message
    assert "UNSPOOL_ARTIFACT_STORE" in message


def test_unreachable_endpoint_names_the_setting(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNSPOOL_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    message = _store_error(monkeypatch, f"s3://{s3_store.bucket}/elsewhere")
    assert "cannot reach the S3 endpoint" in message, message
    assert "UNSPOOL_S3_ENDPOINT_URL" in message


def test_missing_credentials_name_the_variables(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    message = _store_error(monkeypatch, f"s3://{s3_store.bucket}/nocreds")
    assert "no S3 credentials found" in message, message
    assert "AWS_ACCESS_KEY_ID" in message


def test_wrong_credentials_name_the_variables(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A second moto server that checks keys: after one unchecked call (creating the bucket)
    # every request needs a key it knows, and it knows none.
    server = start_s3_server({"INITIAL_NO_AUTH_ACTION_COUNT": "1"})
    try:
        use_aws_test_env(monkeypatch, server.endpoint)
        server.client().create_bucket(Bucket="guarded")
        message = _store_error(monkeypatch, "s3://guarded/artifacts")
    finally:
        server.stop()
    assert "access denied" in message and "AWS_ACCESS_KEY_ID" in message, message
    assert "UNSPOOL_ARTIFACT_STORE" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s4://bucket/prefix", "s4"),  # no such filesystem
        ("s3://", "names no bucket"),
    ],
)
def test_bad_urls_name_the_setting(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch, url: str, expected: str) -> None:
    message = _store_error(monkeypatch, url)
    assert expected in message and "UNSPOOL_ARTIFACT_STORE" in message, message
