"""File operations on local paths and fsspec URLs, as ``zenml.io.fileio`` offers them to
materializers (``from unspool import fileio``; ``fileio.open(os.path.join(self.uri, "x"), "w")``)."""

from __future__ import annotations

import builtins
import os
import shutil
from typing import IO, Any


def _fs(path: str) -> tuple[Any, str]:
    if "://" not in path or path.startswith("file://"):
        return None, path.removeprefix("file://")
    from fsspec.core import url_to_fs

    from ._settings import artifact_storage_options

    return url_to_fs(path, **artifact_storage_options(path))


def open(path: str, mode: str = "r") -> IO[Any]:  # noqa: A001 - the name ZenML uses
    fs, p = _fs(path)
    if fs is None:
        if any(m in mode for m in "wa"):
            os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
        return builtins.open(p, mode)
    return fs.open(p, mode)


def exists(path: str) -> bool:
    fs, p = _fs(path)
    return os.path.exists(p) if fs is None else bool(fs.exists(p))


def isdir(path: str) -> bool:
    fs, p = _fs(path)
    return os.path.isdir(p) if fs is None else bool(fs.isdir(p))


def listdir(path: str) -> list[str]:
    fs, p = _fs(path)
    if fs is None:
        return sorted(os.listdir(p))
    return sorted(os.path.basename(e.rstrip("/")) for e in fs.ls(p, detail=False))


def makedirs(path: str) -> None:
    fs, p = _fs(path)
    os.makedirs(p, exist_ok=True) if fs is None else fs.makedirs(p, exist_ok=True)


mkdir = makedirs


def remove(path: str) -> None:
    fs, p = _fs(path)
    os.remove(p) if fs is None else fs.rm(p)


def rmtree(path: str) -> None:
    fs, p = _fs(path)
    shutil.rmtree(p) if fs is None else fs.rm(p, recursive=True)


def copy(src: str, dst: str, overwrite: bool = False) -> None:
    if exists(dst) and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def rename(src: str, dst: str, overwrite: bool = False) -> None:
    if exists(dst) and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
    fs, p = _fs(src)
    if fs is None:
        os.replace(p, _fs(dst)[1])
    else:
        fs.mv(p, _fs(dst)[1])


def glob(pattern: str) -> list[str]:
    fs, p = _fs(pattern)
    if fs is None:
        import glob as _glob

        return sorted(_glob.glob(p))
    return sorted(fs.glob(p))
