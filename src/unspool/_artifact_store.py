"""The artifact store: a folder tree on any fsspec filesystem.

An artifact version lives in its own directory (``uri``). On a local disk, materializers
write into a staging directory next to it; only when they finish is it renamed to ``uri``,
so a reader never sees half an artifact, and a crash leaves only a ``.staging-*`` directory
behind. Object stores (S3 and every other non-local filesystem) have no atomic rename of a
directory, so there the materializer writes straight into a new, unique directory
(``uri`` plus a random suffix) that nothing refers to yet: the version becomes visible only
when the orchestrator records its metadata row with that uri, after every byte is written.
A crash there leaves an unreferenced directory, never a half-visible artifact; single files
(logs) are replaced by one PUT, which object stores make atomic.
Bytes written through :meth:`ArtifactStore.open` are hashed on the way out, which gives
each version its content hash and size without reading the data back.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import uuid
from typing import IO, Any

from ._errors import StoreError, mask_secrets
from ._ids import new_id
from ._settings import S3_ENDPOINT_ENV, artifact_storage_options

HASH_NAME = "sha256"

# A name is used as one path segment as it is only when it is short, lower case and made of
# letters, digits, "_" and "-": no dot, no separator, nothing a case-insensitive filesystem
# would fold. Any other name is stored as a slug of it plus a hash of the whole name.
_PLAIN_SEGMENT = re.compile(r"[a-z0-9_][a-z0-9_-]{0,79}")
_SLUG_JUNK = re.compile(r"[^a-z0-9_-]+")


def path_segment(name: str) -> str:
    """One path segment for any name: never empty, ``.``/``..``, a separator or too long.

    Injective: a plain name maps to itself; every other name to ``slug~hash``, and ``~``
    never occurs in a plain name. Segments never contain a dot, so a suffix after a dot
    (``.log``, ``.attempt2``) cannot make two locations equal.
    """
    if _PLAIN_SEGMENT.fullmatch(name):
        return name
    slug = _SLUG_JUNK.sub("_", name.lower()).strip("_-")[:40]
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"{slug}~{digest}"


def _make_root(root: str) -> None:
    if os.path.exists(root) and not os.path.isdir(root):
        raise StoreError(
            f"the artifact store {root} is a file, not a folder; point UNSPOOL_ARTIFACT_STORE (or "
            "UNSPOOL_HOME) at a folder, or move the file away"
        )
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)  # a new store: its owner's only
    except (FileExistsError, NotADirectoryError) as exc:
        raise StoreError(
            f"the artifact store folder {root} cannot be created ({exc.strerror}: a part of the path "
            "is a file); point UNSPOOL_ARTIFACT_STORE (or UNSPOOL_HOME) at a folder"
        ) from exc


class ArtifactStore:
    """Thin wrapper over an fsspec filesystem rooted at ``root``."""

    def __init__(self, root: str) -> None:
        self.url = root
        if "://" not in root or root.startswith("file://"):
            # A local folder: plain os calls, and no fsspec import on the path of a step.
            self.root = os.path.abspath(os.path.expanduser(root.removeprefix("file://")))
            self.is_local = True
            self._fs: Any = None
            _make_root(self.root)
            return
        import fsspec
        from fsspec.core import url_to_fs

        try:
            self._fs, self.root = url_to_fs(root, **artifact_storage_options(root))
        except (ImportError, ValueError) as exc:
            hint = " (for S3: pip install 'unspool[s3]')" if root.startswith("s3") else ""
            raise StoreError(
                f"cannot open artifact store {mask_secrets(root)!r} ({exc}); set UNSPOOL_ARTIFACT_STORE to a "
                f"local path or an fsspec URL whose filesystem package is installed{hint}"
            ) from exc
        self.is_local = isinstance(self._fs, fsspec.implementations.local.LocalFileSystem)
        if self.is_local:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        elif "s3" in _protocols(self._fs):
            self._check_s3()

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (created on first use for a local folder)."""
        if self._fs is None:
            from fsspec.implementations.local import LocalFileSystem

            self._fs = LocalFileSystem()
        return self._fs

    def _check_s3(self) -> None:
        """Fail at once, naming the setting to fix, when the bucket cannot be used."""
        bucket, _, prefix = self.root.partition("/")
        where = f"artifact store {mask_secrets(self.url)!r}"
        endpoint = (
            getattr(self.fs, "endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"
        )
        if not bucket:
            raise StoreError(f"{where} names no bucket; set UNSPOOL_ARTIFACT_STORE to s3://bucket/prefix")
        try:  # the cheapest call that needs the permissions a run needs anyway (list + read)
            self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix.rstrip("/") + "/", MaxKeys=1)
        except FileNotFoundError as exc:
            raise StoreError(
                f"{where}: bucket {bucket!r} does not exist at {endpoint}; create it, or fix "
                f"UNSPOOL_ARTIFACT_STORE (or {S3_ENDPOINT_ENV})"
            ) from exc
        except PermissionError as exc:
            raise StoreError(
                f"{where}: access denied by {endpoint} ({_first_line(exc)}); check the credentials "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket in "
                "UNSPOOL_ARTIFACT_STORE"
            ) from exc
        except Exception as exc:
            kind = type(exc).__name__
            if "Credentials" in kind:
                raise StoreError(
                    f"{where}: no S3 credentials found ({_first_line(exc)}); set AWS_ACCESS_KEY_ID "
                    "and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in every process that runs steps"
                ) from exc
            if "Connect" in kind or "Timeout" in kind or isinstance(exc, OSError):
                raise StoreError(
                    f"{where}: cannot reach the S3 endpoint {endpoint} ({_first_line(exc)}); set "
                    f"{S3_ENDPOINT_ENV} to a reachable S3-compatible server, or unset it for AWS"
                ) from exc
            raise StoreError(f"{where}: {kind}: {_first_line(exc)}; check UNSPOOL_ARTIFACT_STORE") from exc

    # -- paths ---------------------------------------------------------------------------
    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if not self.is_local else os.path.join(self.root, *parts)

    def location(self, run_id: str, invocation_id: str, output: str | None = None, attempt: int = 1) -> str:
        """Where a step's output version (or, with ``output=None``, its log file) lives.

        The only place names become paths, for every kind of store: ``RUN/INV.out-OUTPUT``
        (a later attempt: ``RUN/INV.out-OUTPUT.attemptN``), the log ``RUN/INV.log``. Each
        name is one :func:`path_segment` (never a dot in it), so no name escapes the root,
        two names never share a location and no segment exceeds a filesystem's limit on
        name length. Versions sit directly in the run's folder, with no folder per step:
        writing one then makes one directory (its staging directory), not three.
        """
        run, inv = path_segment(run_id), path_segment(invocation_id)
        if output is None:
            return self.join(run, f"{inv}.log")
        out = f"{inv}.out-{path_segment(output)}"
        if len(out) > 100:  # two long names: one short segment for the pair (still injective,
            # as path_segment is: "~" and ".out" without "-" occur in no name made above)
            digest = hashlib.sha256(out.encode()).hexdigest()[:24]
            out = f"{inv[:40]}~{digest}.out"
        return self.join(run, out if attempt == 1 else f"{out}.attempt{attempt}")

    # -- primitives ------------------------------------------------------------------------
    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        if self.is_local:
            try:
                return open(path, mode)  # noqa: SIM115 - caller closes
            except FileNotFoundError:
                if "w" not in mode and "a" not in mode:
                    raise
                os.makedirs(os.path.dirname(path), exist_ok=True)
                return open(path, mode)  # noqa: SIM115
        return self.fs.open(path, mode)

    def exists(self, path: str) -> bool:
        return os.path.exists(path) if self.is_local else bool(self.fs.exists(path))

    def makedirs(self, path: str) -> None:
        if self.is_local:
            os.makedirs(path, exist_ok=True)
        else:
            self.fs.makedirs(path, exist_ok=True)

    def read_bytes(self, path: str) -> bytes:
        with self.open(path, "rb") as f:
            return f.read()

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        if not self.is_local:  # one PUT: an object store replaces an object atomically
            self.fs.pipe_file(path, data)
            return
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

    def damage(self, uri: str, size: int) -> str | None:
        """What is wrong with the files of an artifact recorded with ``size`` bytes, or None.

        Costs one listing (a directory scan, or one LIST on an object store), no reads.
        """
        total, found = 0, False
        if self.is_local:
            stack = [uri]
            try:
                while stack:
                    with os.scandir(stack.pop()) as entries:
                        found = True
                        for entry in entries:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
                            else:
                                total += entry.stat(follow_symlinks=False).st_size
            except (FileNotFoundError, NotADirectoryError):
                if not found:
                    return "its folder is gone"
        else:
            try:
                sizes = self.fs.du(uri, total=False)
            except FileNotFoundError:
                sizes = {}
            found, total = bool(sizes), sum(sizes.values())
            if not found and size:
                return "its files are gone"
        if total != size:
            return f"it holds {total} bytes but {size} were recorded"
        return None

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
        """Where to write the version meant for ``uri``; :meth:`commit_dir` publishes it."""
        if not self.is_local:  # an object store: write once under a new unique key
            unique = f"{uri}-{uuid.uuid4().hex[:8]}"
            self.makedirs(unique)  # a no-op on S3; some filesystems need the folder
            return unique
        parent, name = os.path.split(uri)
        staging = os.path.join(parent, f".staging-{name}-{new_id()[-12:]}")
        try:
            os.mkdir(staging)
        except FileNotFoundError:
            os.makedirs(staging)
        return staging

    def commit_dir(self, staging: str, uri: str) -> str:
        """Publish a finished staging directory; returns the uri to record for it.

        Locally it is renamed to ``uri`` (atomic). On an object store it stays where it was
        written: that unique key is the uri, made visible by the metadata row that names it.
        """
        if not self.is_local:
            return staging
        try:
            os.rename(staging, uri)
        except OSError:  # an earlier attempt left a version there (resume): replace it
            self.remove(uri)
            os.rename(staging, uri)
        return uri


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
            self._tracker.complete = False

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
        self.complete = True  # every file written was hashed in order (none sought)


class TrackingArtifactStore:
    """The store handed to a materializer while it saves: same API, hashes writes."""

    def __init__(self, store: ArtifactStore, tracker: SaveTracker) -> None:
        self._store = store
        self._tracker = tracker

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        if "w" in mode and "b" not in mode:  # text, as ZenML's materializer docs write it
            binary = _HashingWriter(self._store.open(path, mode + "b"), self._tracker, path)
            return io.TextIOWrapper(binary, encoding="utf-8")  # type: ignore[arg-type]
        inner = self._store.open(path, mode)
        if "w" in mode:
            return _HashingWriter(inner, self._tracker, path)  # type: ignore[return-value]
        return inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def directory_digest(store: ArtifactStore, staging: str, tracker: SaveTracker, *, tracked_only: bool = False) -> tuple[str, int]:
    """Content hash and size of a staging directory: names and bytes of every file in it.

    ``tracked_only``: the materializer writes nothing but through the tracking store (the
    built-in ones), so when every file was hashed on the way out the directory is not
    listed again.
    """
    if tracked_only and tracker.complete and tracker.files and store.is_local:
        prefix = staging.rstrip(os.sep) + os.sep
        files = sorted(
            (full[len(prefix):].replace(os.sep, "/"), full) for full in tracker.files if full.startswith(prefix)
        )
        if len(files) == len(tracker.files) and not any("/" in rel for rel, _ in files):  # flat: walk order
            return _combine(files, store, tracker)
    return _combine(_walk(store, staging), store, tracker)


def _combine(files: list[tuple[str, str]], store: ArtifactStore, tracker: SaveTracker) -> tuple[str, int]:
    total = hashlib.new(HASH_NAME)
    size = 0
    for rel, full in files:
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
