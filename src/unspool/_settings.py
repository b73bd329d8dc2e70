"""Where the stores live.

``UNSPOOL_HOME`` names a folder holding the default SQLite metadata store (``unspool.db``)
and the local artifact store (``artifacts/``). Without it, unspool looks for ``.unspool/``
upwards from the working directory, like git looks for ``.git``; if there is none, it
creates one at the project root (the nearest folder with ``.git`` or ``pyproject.toml``,
else the working directory). ``UNSPOOL_STORE_URL`` (any SQLAlchemy URL) and
``UNSPOOL_ARTIFACT_STORE`` (any fsspec URL or path) override each part.

An ``s3://bucket/prefix`` artifact store talks to AWS, or to any S3-compatible server named
by ``UNSPOOL_S3_ENDPOINT_URL`` (e.g. ``http://minio:9000``); credentials come from the usual
AWS sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance
role). Every process that runs steps needs the same settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOME_DIRNAME = ".unspool"
S3_ENDPOINT_ENV = "UNSPOOL_S3_ENDPOINT_URL"
_PROJECT_MARKERS = (".git", "pyproject.toml", "setup.py")


@dataclass(frozen=True)
class StoreLocation:
    home: Path
    store_url: str
    artifact_root: str


def find_home(start: Path | None = None, *, create: bool = True) -> Path:
    env = os.environ.get("UNSPOOL_HOME")
    if env:
        home = Path(env).expanduser().resolve()
    else:
        cwd = (start or Path.cwd()).resolve()
        home = _search_upwards(cwd, HOME_DIRNAME)
        if home is None:
            root = next(
                (d for d in (cwd, *cwd.parents) if any((d / m).exists() for m in _PROJECT_MARKERS)),
                cwd,
            )
            home = root / HOME_DIRNAME
    if create and not home.is_dir():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new home: its owner's only
    return home


def _search_upwards(start: Path, name: str) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / name
        if candidate.is_dir():
            return candidate
    return None


def resolve_location() -> StoreLocation:
    home = find_home()
    store_url = os.environ.get("UNSPOOL_STORE_URL") or f"sqlite:///{home / 'unspool.db'}"
    artifact_root = os.environ.get("UNSPOOL_ARTIFACT_STORE") or str(home / "artifacts")
    return StoreLocation(home=home, store_url=store_url, artifact_root=artifact_root)


def artifact_storage_options(url: str) -> dict[str, Any]:
    """fsspec options for the artifact store at ``url``: for S3, the endpoint and no listing cache.

    Listings are not cached because other processes write to the same store: a cached listing
    would hide their files.
    """
    protocol = url.split("://", 1)[0].lower() if "://" in url else ""
    if protocol not in ("s3", "s3a"):
        return {}
    options: dict[str, Any] = {"use_listings_cache": False}
    endpoint = os.environ.get(S3_ENDPOINT_ENV)
    if endpoint:
        options["endpoint_url"] = endpoint
    return options
