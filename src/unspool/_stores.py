"""The stores of one location, opened once per process and shared by everyone in it.

:func:`open_stores` resolves the location (``UNSPOOL_HOME``, ``UNSPOOL_STORE_URL``,
``UNSPOOL_ARTIFACT_STORE``; see ``_settings.py``) and returns its :class:`Stores`: the
metadata store (schema and buffered writer; reads go through ``_queries``) and the
artifact store. The engine and the client open them the same way, so a client in the
orchestrating process reads the database the engine writes to.

:func:`close_stores` flushes and closes every open store and forgets them (the next
``open_stores`` opens afresh): the supported reset between tests, through
``unspool.testing.reset_stores``.
"""

from __future__ import annotations

import gc
import threading

from . import _queries
from ._artifact_io import artifact_store_for
from ._artifact_store import ArtifactStore
from ._metadata_store import MetadataStore
from ._settings import resolve_location
from ._types import Produced

CacheEntry = tuple[str, dict[str, Produced]]  # (step run id, outputs by name)


class Stores:
    """The metadata and artifact stores of one location, plus the process's cache index."""

    def __init__(self, store_url: str, artifact_root: str) -> None:
        self.store_url = store_url
        self.artifact_root = artifact_root
        self.metadata = MetadataStore(store_url)
        self.artifacts: ArtifactStore = artifact_store_for(artifact_root)
        self.cache_memo: dict[str, CacheEntry] = {}  # cache key -> completed in this process
        self._cache_index: dict[str, dict[str, CacheEntry]] = {}
        self._cache_lock = threading.Lock()

    def cached_outputs(self, step_name: str) -> dict[str, CacheEntry]:
        """Cache key -> (step run id, outputs) of every completed run of a step, read once.

        One query per step name and process instead of one per invocation; step runs that
        complete later in this process are found through ``cache_memo``.
        """
        index = self._cache_index.get(step_name)
        if index is None:
            with self._cache_lock:
                index = self._cache_index.get(step_name)
                if index is None:
                    index = self._cache_index[step_name] = {}
                    self.metadata.flush()
                    for key, step_run_id, output_name, produced in _queries.completed_outputs(self.metadata, step_name):
                        entry = index.setdefault(key, (step_run_id, {}))
                        if entry[0] == step_run_id and output_name is not None:
                            entry[1][output_name] = Produced(**produced)
        return index

    def forget_cached(self) -> None:
        """Drop what this process knows of completed step runs (after some were deleted)."""
        with self._cache_lock:
            self.cache_memo.clear()
            self._cache_index.clear()


_open: dict[tuple[str, str], Stores] = {}
_lock = threading.Lock()


def open_stores() -> Stores:
    """The stores of the current location, opened (and migrated) on first use."""
    loc = resolve_location()
    key = (loc.store_url, loc.artifact_root)
    stores = _open.get(key)
    if stores is None:
        with _lock:
            stores = _open.get(key)
            if stores is None:
                stores = _open[key] = Stores(*key)
                # The stores' modules (SQLAlchemy...) live as long as the process: move them out
                # of the garbage collector's way, which otherwise walks them at every full
                # collection and once more at exit.
                gc.freeze()
    return stores


def flush_all() -> None:
    """Commit what every open store has buffered."""
    for stores in list(_open.values()):
        stores.metadata.flush()


def close_stores() -> None:
    """Flush and close every open store; the next :func:`open_stores` opens them afresh."""
    with _lock:
        opened = list(_open.values())
        _open.clear()
    for stores in opened:
        stores.metadata.close()
