"""Support for testing code that uses unspool.

:func:`reset_stores` flushes and closes every metadata and artifact store this process
opened; the next run or ``Client()`` opens them again from the current settings
(``UNSPOOL_HOME``, ``UNSPOOL_STORE_URL``, ``UNSPOOL_ARTIFACT_STORE``). Call it between
tests that change those settings, e.g. in a pytest fixture::

    @pytest.fixture(autouse=True)
    def fresh_home(tmp_path, monkeypatch):
        monkeypatch.setenv("UNSPOOL_HOME", str(tmp_path / "home"))
        yield
        reset_stores()

:func:`current_stores` gives the stores of the current settings (opening them), for tests
that inspect the metadata store directly.
"""

from __future__ import annotations

from ._stores import Stores, close_stores, open_stores


def reset_stores() -> None:
    """Flush and close every open store; the next use opens them afresh."""
    close_stores()


def current_stores() -> Stores:
    """The stores of the current settings (``.metadata``, ``.artifacts``, ``.artifact_root``)."""
    return open_stores()


__all__ = ["Stores", "current_stores", "reset_stores"]
