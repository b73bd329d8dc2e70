"""The metadata store on a real PostgreSQL server (``UNSPOOL_STORE_URL=postgresql+psycopg://...``).

Every test gets a new database on the session's throwaway cluster (see ``_servers.py``): the
same schema and migrations as SQLite, the same results, and writes from several processes
at once that lose nothing and number artifact versions 1..N without gaps or duplicates.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from _servers import PG_PASSWORD, PostgresServer, free_port, unavailable
from unspool import Client, ExecutionStatus, StoreError, log_metadata, pipeline, step
from unspool import _metadata_store as ms
from unspool._batch_sql import insert_missing
from unspool._store_json import _dumps_strict as dumps_strict_json
from unspool.testing import current_stores, reset_stores

# -- runs end to end ---------------------------------------------------------------------------------


def test_pipeline_runs_end_to_end_and_reads_back(pg_url: str) -> None:
    @step
    def count() -> int:
        print("counting")
        return 3

    @step
    def square(i: int, scale: float = 1.0) -> dict:
        log_metadata({"i": i, "nested": {"list": [1, "two", None]}, "loss": float("nan")})
        return {"value": i * i * scale}

    @pipeline(dynamic=True)
    def squares(scale: float = 2.0) -> None:
        n = count()
        for i in range(n.load()):
            square(i, scale=scale)

    run = squares()

    assert run.status == ExecutionStatus.COMPLETED
    assert current_stores().metadata.engine.dialect.name == "postgresql"
    client = Client()
    [stored] = client.list_pipeline_runs()
    assert stored.id == run.id and stored.parameters == {"scale": 2.0}
    steps = stored.steps
    assert list(steps) == ["count", "square", "square_2", "square_3"]
    assert steps["count"].logs == "counting\n"
    assert [steps[s].output.load() for s in ("square", "square_2", "square_3")] == [
        {"value": 0.0}, {"value": 2.0}, {"value": 8.0}
    ]
    # JSON columns come back as JSON; NaN, which PostgreSQL's JSON rejects, is stored as "NaN".
    meta = steps["square_3"].metadata
    assert meta == {"i": 2, "nested": {"list": [1, "two", None]}, "loss": "NaN"}
    assert [v.version for v in client.list_artifact_versions("squares::square::output")] == [3, 2, 1]
    assert client.get_artifact_version("squares::square::output").version == 3


def test_cache_hits_on_postgres(pg_url: str) -> None:
    calls: list[int] = []

    @step
    def slow(x: int) -> int:
        calls.append(x)
        return x + 1

    @pipeline
    def cached(x: int = 1) -> None:
        slow(x)

    cached()
    second = cached()
    assert calls == [1]
    assert second.steps["slow"].status == ExecutionStatus.CACHED
    assert second.steps["slow"].output.load() == 2


def test_schema_and_migrations_match_sqlite(pg_url: str, tmp_path: Path) -> None:
    pg = ms.MetadataStore(pg_url)
    lite = ms.MetadataStore(f"sqlite:///{tmp_path / 'schema.db'}")
    try:
        def shape(store: ms.MetadataStore) -> dict[str, Any]:
            inspector = sa.inspect(store.engine)
            return {
                table: sorted(
                    (c["name"], c["nullable"]) for c in inspector.get_columns(table)
                )
                for table in sorted(inspector.get_table_names())
            }

        assert shape(pg) == shape(lite)
        assert set(shape(pg)) == set(ms.metadata.tables)
        with pg.read() as conn:
            versions = conn.execute(sa.select(ms.schema_version.c.version)).scalars().all()
        assert sorted(versions) == list(range(1, ms.SCHEMA_VERSION + 1))
    finally:
        pg.close()
        lite.close()
    # Opening again migrates nothing: each version is recorded once.
    again = ms.MetadataStore(pg_url)
    with again.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ms.schema_version)).scalar() == ms.SCHEMA_VERSION
    again.close()


def test_no_sqlite_pragmas_or_begin_immediate_on_postgres(pg_url: str) -> None:
    store = ms.MetadataStore(pg_url)
    try:
        assert not sa.event.contains(store.engine, "connect", ms._sqlite_on_connect)
        assert not sa.event.contains(store.engine, "begin", ms._sqlite_on_begin)
        with store.write() as conn:  # a plain transaction at PostgreSQL's default isolation
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
    finally:
        store.close()


# -- several writers at once ---------------------------------------------------------------------------


def _version_numbers(url: str) -> dict[str, list[int]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ms.artifact_versions.c.name, ms.artifact_versions.c.version)
        ).all()
        latest = dict(conn.execute(sa.select(ms.artifacts.c.name, ms.artifacts.c.latest_version)).all())
    engine.dispose()
    numbers: dict[str, list[int]] = {}
    for name, version in rows:
        numbers.setdefault(name, []).append(version)
    for name in numbers:
        numbers[name].sort()
        assert latest[name] == len(numbers[name]), name
    return numbers


def test_flushes_from_many_stores_number_versions_without_gaps_or_deadlocks(pg_url: str) -> None:
    """Four writers flush batches naming the same artifacts in random orders, at once."""
    names = [f"shared-{i}" for i in range(4)]
    writers, flushes, per_flush = 4, 25, 3
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers)

    def writer(seed: int) -> None:
        store = ms.MetadataStore(pg_url)
        rng = random.Random(seed)
        try:
            barrier.wait()
            for _ in range(flushes):
                for name in rng.sample(names, per_flush):
                    store.insert_artifact_version(_version_row(name))
                store.flush()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    numbers = _version_numbers(pg_url)
    assert sum(len(v) for v in numbers.values()) == writers * flushes * per_flush
    for name, versions in numbers.items():
        assert versions == list(range(1, len(versions) + 1)), name


def _version_row(name: str) -> dict[str, Any]:
    import uuid

    return {
        "id": uuid.uuid4().hex, "name": name, "uri": f"/nowhere/{uuid.uuid4().hex}", "data_type": "builtins:int",
        "materializer": "m", "content_hash": "0" * 64, "size": 1, "item_count": None,
        "producer_step_run_id": None, "run_id": None, "tags": [], "artifact_metadata": {},
        "created_at": time.time(),
    }


def test_insert_on_conflict_waits_for_and_skips_a_concurrent_insert(pg_url: str) -> None:
    """Two transactions add the same new artifact name: the second waits, then does nothing."""
    store = ms.MetadataStore(pg_url)
    row = {"name": "raced", "latest_version": 0, "created_at": time.time()}
    outcome: list[Any] = []
    try:
        with store.write() as first:
            insert_missing(first, ms.artifacts, [dict(row)])

            def second() -> None:
                try:
                    with store.write() as conn:
                        insert_missing(conn, ms.artifacts, [dict(row)])
                        outcome.append(
                            conn.execute(
                                ms.artifacts.update().where(ms.artifacts.c.name == "raced")
                                .values(latest_version=ms.artifacts.c.latest_version + 1)
                                .returning(ms.artifacts.c.latest_version)
                            ).scalar_one()
                        )
                except BaseException as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=second)
            thread.start()
            thread.join(0.5)
            assert thread.is_alive(), "the second insert should wait for the first transaction"
        thread.join(30)
        assert outcome == [1]
    finally:
        store.close()


CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from unspool import pipeline, step

    @step(enable_cache=False)
    def produce(i: int) -> int:
        return i

    @step(enable_cache=False)
    def double(x: int) -> int:
        return 2 * x

    @pipeline(dynamic=True, enable_cache=False)
    def fifty() -> None:
        futures = []
        for i in range(25):
            futures.append(double.submit(produce.submit(i)))
        for f in futures:
            f.result()

    go = Path(sys.argv[1])
    Path(sys.argv[2]).touch()  # imported and ready
    while not go.exists():
        time.sleep(0.01)
    run = fifty()
    print(run.id, run.status.value)
    """
)


def test_three_processes_on_one_store_lose_nothing(pg_url: str, tmp_path: Path) -> None:
    script = tmp_path / "fifty.py"
    script.write_text(CONCURRENT_SCRIPT)
    go = tmp_path / "go"
    env = {**os.environ, "UNSPOOL_HOME": str(tmp_path / "shared-home")}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(go), str(tmp_path / f"ready-{i}")], env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + 120  # only turns a hang into a failure
    while len(list(tmp_path.glob("ready-*"))) < 3:  # all three imported unspool: start them together
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a process did not start"
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out + err[-3000:]  # the statuses are read from the store below

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        def count(table: sa.Table, *where: Any) -> int:
            return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar()

        assert count(ms.pipeline_runs) == 3
        assert count(ms.pipeline_runs, ms.pipeline_runs.c.status == "completed") == 3
        assert count(ms.pipelines) == 1
        assert count(ms.step_runs) == 3 * 50
        assert count(ms.step_runs, ms.step_runs.c.status == "completed") == 3 * 50
        assert count(ms.artifact_versions) == 3 * 50
        assert count(ms.step_run_artifacts, ms.step_run_artifacts.c.direction == "output") == 3 * 50
        assert count(ms.step_run_artifacts, ms.step_run_artifacts.c.direction == "input") == 3 * 25
        assert count(ms.schema_version) == ms.SCHEMA_VERSION
    engine.dispose()
    numbers = _version_numbers(pg_url)
    assert set(numbers) == {"fifty::produce::output", "fifty::double::output"}
    for name, versions in numbers.items():
        assert versions == list(range(1, 76)), name


# -- clear errors ---------------------------------------------------------------------------------------


def _store_error(monkeypatch: pytest.MonkeyPatch, url: str) -> str:
    monkeypatch.setenv("UNSPOOL_STORE_URL", url)
    reset_stores()
    with pytest.raises(StoreError) as info:
        Client()
    message = str(info.value)
    assert "\n" not in message, message
    assert "UNSPOOL_STORE_URL" in message, message
    return message


def test_unreachable_server_names_the_setting(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    url = f"postgresql+psycopg://unspool:{PG_PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    message = _store_error(monkeypatch, url)
    assert "refused" in message.lower() or "failed" in message.lower(), message
    assert PG_PASSWORD not in message  # the password is masked


def test_wrong_password_names_the_setting(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    message = _store_error(monkeypatch, postgres_server.url("postgres", password="not-the-password"))
    assert "password authentication failed" in message, message
    assert "not-the-password" not in message


def test_missing_database_names_the_setting(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    message = _store_error(monkeypatch, postgres_server.url("no_such_database"))
    assert 'database "no_such_database" does not exist' in message, message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysqlx://user@host/db", "mysqlx"),  # a scheme SQLAlchemy has no dialect for
        ("not a url at all", "parse"),
        ("postgres://user:secret@host/db", "postgresql+psycopg://"),  # Heroku-style scheme
    ],
)
def test_bad_urls_name_the_setting(monkeypatch: pytest.MonkeyPatch, home: Path, url: str, expected: str) -> None:
    message = _store_error(monkeypatch, url)
    assert expected in message, message
    assert "secret" not in message


def test_a_name_too_long_for_its_column_fails_clearly_and_the_store_keeps_working(pg_url: str) -> None:
    @step
    def one() -> int:
        return 1

    @pipeline(run_name="r" * 300)
    def long_named() -> None:
        one()

    with pytest.raises(StoreError, match="pipeline_runs.name .* is 300 characters long; .* at most 255"):
        long_named()
    assert long_named.with_options(run_name="short")().status == ExecutionStatus.COMPLETED


def test_a_missing_server_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        unavailable("PostgreSQL is not installed")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL is not installed"):
        unavailable("PostgreSQL is not installed")


def test_nan_and_infinities_are_stored_as_strings() -> None:
    assert dumps_strict_json({"a": [math.nan, math.inf, -math.inf, 1.5]}) == (
        '{"a": ["NaN", "Infinity", "-Infinity", 1.5]}'
    )
