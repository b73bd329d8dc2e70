"""Every test gets its own fresh stores under a temporary UNSPOOL_HOME."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from _servers import pg_url, postgres_server, s3_server, s3_store  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "unspool-home"
    monkeypatch.setenv("UNSPOOL_HOME", str(home))
    monkeypatch.delenv("UNSPOOL_STORE_URL", raising=False)
    monkeypatch.delenv("UNSPOOL_ARTIFACT_STORE", raising=False)
    monkeypatch.setenv("UNSPOOL_PROGRESS", "plain")
    yield home
    from unspool.testing import reset_stores

    reset_stores()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List the screenshots the dashboard's browser tests took (tests/screenshots/)."""
    from _dashboard_support import SCREENSHOTS

    if SCREENSHOTS:
        terminalreporter.section("dashboard screenshots")
        for path in SCREENSHOTS:
            terminalreporter.write_line(str(path))
