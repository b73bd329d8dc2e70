"""Helpers for the dashboard tests: a real server in a thread, real runs in other processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from _servers import free_port, wait_for_port

SCREENSHOTS: list[Path] = []  # taken this session; conftest lists them in the summary


class LiveServer:
    """The dashboard app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.port = free_port()
        self.host = host
        self.url = f"http://{'127.0.0.1' if host in ('127.0.0.1', '0.0.0.0') else host}:{self.port}"
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        if not wait_for_port(self.port, 30):
            raise RuntimeError("the dashboard server did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def app_for_current_project(**kwargs: Any) -> Any:
    """The dashboard app over the stores the test's environment names."""
    from unspool.dashboard import create_app
    from unspool.testing import current_stores

    env = current_stores()
    return create_app(env.metadata, env.artifact_root, **kwargs)


def start_script(tmp_path: Path, source: str, name: str = "job.py") -> subprocess.Popen[bytes]:
    """Run ``source`` as a script in another process with the test's environment."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), cwd=tmp_path
    )
    log.close()
    return proc


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition", proc: Any = None, log: Path | None = None) -> Any:
    """Poll ``predicate`` until it returns something true; fail with context otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None and proc.returncode != 0:
            detail = log.read_text() if log is not None and log.exists() else ""
            raise AssertionError(f"the job process exited with {proc.returncode} before {what}:\n{detail}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
