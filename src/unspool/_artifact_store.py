"""The artifact store: a folder tree on any fsspec filesystem.

An artifact version lives in its own directory (``uri``). Materializers write into a
staging directory next to it; only when they finish is it renamed to ``uri``, so a reader
never sees half an artifact, and a crash leaves only a ``.staging-*`` directory behind.
Bytes written through :meth:`ArtifactStore.open` are hashed on the way out, which gives
each version its content hash and size without reading the data back.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from typing import IO, Any

from ._errors import StoreError

HASH_NAME = "sha256"


class ArtifactStore:
    """Thin wrapper over an fsspec filesystem rooted at ``root``."""

    def __init__(self, root: str) -> None:
        import fsspec
        from fsspec.core import url_to_fs

        self.url = root
        try:
            self.fs, self.root = url_to_fs(root)
        except (ImportError, ValueError) as exc:
            raise StoreError(
                f"cannot open artifact store {root!r} ({exc}); set UNSPOOL_ARTIFACT_STORE to a "
                "local path or an fsspec URL whose filesystem package is installed"
            ) from exc
        self.is_local = isinstance(self.fs, fsspec.implementations.local.LocalFileSystem)
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------
    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if not self.is_local else os.path.join(self.root, *parts)

    def full(self, path: str) -> str:
        """Turn a stored (store-relative or absolute) uri into a path on the filesystem."""
        return path

    # -- primitives ------------------------------------------------------------------------
    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        if self.is_local:
            if "w" in mode or "a" in mode:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            return open(path, mode)  # noqa: SIM115 - caller closes
        return self.fs.open(path, mode)

    def exists(self, path: str) -> bool:
        return os.path.exists(path) if self.is_local else bool(self.fs.exists(path))

    def makedirs(self, path: str) -> None:
        if self.is_local:
            os.makedirs(path, exist_ok=True)
        else:
            self.fs.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        if self.is_local:
            return sorted(os.listdir(path))
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False))

    def read_bytes(self, path: str) -> bytes:
        with self.open(path, "rb") as f:
            return f.read()

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.open(tmp, "wb") as f:
            f.write(data)
        self._rename(tmp, path)

    def append_text(self, path: str, text: str) -> None:
        """Add text to a log file; rewrites on filesystems that cannot append."""
        if self.is_local:
            with self.open(path, "a") as f:
                f.write(text)
            return
        old = self.read_bytes(path).decode() if self.exists(path) else ""
        self.write_bytes_atomic(path, (old + text).encode())

    def remove(self, path: str) -> None:
        if self.is_local:
            import shutil

            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)
        elif self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def _rename(self, src: str, dst: str) -> None:
        if self.is_local:
            os.replace(src, dst)
        else:
            self.fs.mv(src, dst, recursive=True)

    # -- atomic directories -----------------------------------------------------------------
    def staging_dir(self, uri: str) -> str:
        parent, name = os.path.split(uri) if self.is_local else posixpath.split(uri)
        staging = (os.path.join if self.is_local else posixpath.join)(
            parent, f".staging-{name}-{uuid.uuid4().hex[:8]}"
        )
        self.makedirs(staging)
        return staging

    def commit_dir(self, staging: str, uri: str) -> None:
        """Publish a finished staging directory under its final uri (atomic rename)."""
        if self.exists(uri):
            self.remove(uri)
        self._rename(staging, uri)


class _HashingWriter:
    """A write-only file that hashes and counts the bytes passing through it."""

    def __init__(self, inner: IO[Any], tracker: SaveTracker, path: str) -> None:
        self._inner = inner
        self._tracker = tracker
        self._path = path
        self._digest = hashlib.new(HASH_NAME)
        self._size = 0
        self._exact = True
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._digest.update(b)
        self._size += len(memoryview(b).cast("B")) if not isinstance(b, bytes) else len(b)
        return self._inner.write(b)

    def seek(self, *args: Any) -> int:
        self._exact = False  # bytes no longer arrive in order: hash the file on close
        return self._inner.seek(*args)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inner.close()
        if self._exact:
            self._tracker.files[self._path] = (self._digest.digest(), self._size)
        else:
            self._tracker.files.pop(self._path, None)

    def __enter__(self) -> _HashingWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SaveTracker:
    """Records what a materializer wrote into one staging directory."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, int]] = {}


class TrackingArtifactStore:
    """The store handed to a materializer while it saves: same API, hashes writes."""

    def __init__(self, store: ArtifactStore, tracker: SaveTracker) -> None:
        self._store = store
        self._tracker = tracker

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        inner = self._store.open(path, mode)
        if "w" in mode and "b" in mode:
            return _HashingWriter(inner, self._tracker, path)  # type: ignore[return-value]
        if "w" in mode:
            inner.close()
            raise ValueError("open artifact files in binary mode ('wb') and encode text yourself")
        return inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def directory_digest(store: ArtifactStore, staging: str, tracker: SaveTracker) -> tuple[str, int]:
    """Content hash and size of a staging directory: names and bytes of every file in it."""
    total = hashlib.new(HASH_NAME)
    size = 0
    for rel, full in _walk(store, staging):
        known = tracker.files.get(full)
        if known is None:
            digest = hashlib.new(HASH_NAME)
            with store.open(full, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(chunk)
                    size += len(chunk)
            file_digest = digest.digest()
        else:
            file_digest, file_size = known
            size += file_size
        total.update(rel.encode() + b"\0" + file_digest)
    return total.hexdigest(), size


def _walk(store: ArtifactStore, top: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if store.is_local:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                out.append((os.path.relpath(full, top).replace(os.sep, "/"), full))
    else:
        for full in sorted(store.fs.find(top)):
            out.append((posixpath.relpath(full, top), full))
    return out
