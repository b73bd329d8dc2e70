"""Real servers for the production-store tests, started by the tests themselves.

``postgres_server`` (session): a throwaway PostgreSQL cluster from Debian's ``postgresql``
package. ``initdb`` goes into a fresh folder under /tmp, ``pg_ctl start`` serves it on a free
loopback port (TCP with password auth, plus a unix socket in that folder), and the cluster is
stopped and deleted after the session. PostgreSQL refuses to run as root, so as root both run
as the ``postgres`` user the package creates (``runuser -u postgres --``).

``s3_server`` (session): moto's S3-compatible server (``python -m moto.server``) on a free
loopback port, in its own process, stopped after the session.

``pg_url`` and ``s3_store`` (per test) give each test a new database / a new bucket and point
``UNSPOOL_STORE_URL`` / ``UNSPOOL_ARTIFACT_STORE`` (and the S3 endpoint and dummy AWS keys) at
them. When a server cannot be had, the test is skipped with the reason, except under
``CI=true``, where it fails: CI must run these tests, not silently skip them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

PG_USER = "unspool"
PG_PASSWORD = "unspool-test-pw"
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait on an instance-metadata lookup
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose server is missing, or fail it under CI=true."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: these tests must run in CI; .ci/run installs what they need)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, alive: Any = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


# -- PostgreSQL ------------------------------------------------------------------------------------

def find_pg_bindir() -> Path | None:
    """The newest installed server's bin folder (Debian keeps initdb off PATH)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        return Path(max(found, key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0)).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, on a loopback port."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="unspool-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._as_user: list[str] = []

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, timeout=120, cwd=self.dir
        )

    def start(self) -> None:
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            import pwd

            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no 'postgres' user to run PostgreSQL as")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        pwfile = self.dir / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self._as_user:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        done = self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", PG_USER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
        )
        if done.returncode != 0:
            unavailable(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        done = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", options, "start",
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            unavailable(f"pg_ctl start failed: {done.stderr.strip()} {log[-2000:]}")

    def url(self, database: str, *, password: str = PG_PASSWORD, port: int | None = None) -> str:
        return f"postgresql+psycopg://{PG_USER}:{password}@127.0.0.1:{port or self.port}/{database}"

    def admin(self) -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, password=PG_PASSWORD,
            dbname="postgres", autocommit=True,
        )

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Any:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[test]')")
    bindir = find_pg_bindir()
    if bindir is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer, home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A new, empty database for this test, set as UNSPOOL_STORE_URL."""
    database = postgres_server.create_database()
    url = postgres_server.url(database)
    monkeypatch.setenv("UNSPOOL_STORE_URL", url)
    yield url
    from unspool.testing import reset_stores

    reset_stores()
    postgres_server.drop_database(database)


# -- S3 (moto) -------------------------------------------------------------------------------------

class S3Server:
    """moto's S3-compatible server in a child process on a loopback port."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="unspool-s3-"))
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.dir / "moto.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.extra_env},
        )
        log.close()
        if not wait_for_port(self.port, 60, alive=lambda: self.proc.poll() is None):
            text = (self.dir / "moto.log").read_text(errors="replace")[-2000:]
            self.stop()
            unavailable(f"moto's S3 server did not start: {text}")

    def client(self, **keys: str) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=keys.get("key", "testing"),
            aws_secret_access_key=keys.get("secret", "testing"),
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_s3_server(extra_env: dict[str, str] | None = None) -> S3Server:
    try:
        import flask  # noqa: F401  (moto's server needs it)
        import moto  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:
        unavailable(f"{exc.name} is not installed (pip install -e '.[test]')")
    server = S3Server(extra_env)
    server.start()
    return server


@pytest.fixture(scope="session")
def s3_server() -> Any:
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class S3Store:
    server: S3Server
    bucket: str
    url: str  # the UNSPOOL_ARTIFACT_STORE value

    def object_keys(self) -> list[str]:
        client = self.server.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def use_aws_test_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("UNSPOOL_S3_ENDPOINT_URL", endpoint)


@pytest.fixture
def s3_store(s3_server: S3Server, home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A new bucket for this test, set as UNSPOOL_ARTIFACT_STORE (s3://bucket/artifacts)."""
    use_aws_test_env(monkeypatch, s3_server.endpoint)
    bucket = f"unspool-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/artifacts"
    monkeypatch.setenv("UNSPOOL_ARTIFACT_STORE", url)
    yield S3Store(s3_server, bucket, url)
    from unspool.testing import reset_stores

    reset_stores()
