"""Atomic writes: every file and folder goodsam writes appears under its final name complete or not at all.

One rule for all of them: the content is written to a temporary sibling, ``.<name>.<pid>.tmp`` (dot
prefix, same folder, so the rename cannot cross file systems), flushed to disk and renamed into place
with ``os.replace``. A process killed midway leaves only such a temporary; :func:`stale_temporaries`
finds the ones of a given file (any process id), and a failed write removes its own.

* :func:`atomic_write` yields an open file handle; :func:`atomic_write_text` writes a string;
* :func:`atomic_path` yields the temporary *path*, for writers that want a file name (a compiler,
  an exporter);
* :func:`save_tensors` writes a safetensors file;
* :func:`atomic_directory` yields a temporary folder to fill, then swaps it in for the target folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TEMP_SUFFIX = ".tmp"


def temporary_path(path: str | os.PathLike) -> Path:
    """The temporary sibling this process writes ``path`` through: ``.<name>.<pid>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries left beside ``path`` by interrupted writes (of any process)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"))


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield the temporary path to write ``path`` through; on success it is synced and renamed into place,
    on an exception it is deleted (``path`` is untouched). The parent folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = True,
                 encoding: str | None = None) -> Iterator[IO]:
    """``with atomic_write(path) as handle:`` write to ``handle``; ``path`` gets the content on exit.

    ``mode``: ``"wb"`` (binary) or ``"w"`` (text, ``encoding`` defaulting to UTF-8)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        encoding = encoding or "utf-8"
    with atomic_path(path, fsync=False) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w", fsync=fsync) as handle:
        handle.write(text)
    return Path(path)


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> Path:
    """Save tensors as a safetensors file atomically (each cloned to contiguous CPU memory, so tensors
    that share storage are written as separate ones)."""
    from safetensors.torch import save_file  # imports torch: only where tensors are written

    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata=metadata)
    return Path(path)


def replace_directory(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the finished folder ``source`` to ``target``; an existing ``target`` is first renamed aside
    (``.<name>.<pid>.old``), then deleted, so ``target`` is always either the old or the new folder."""
    source, target = Path(source), Path(target)
    _fsync_dir(source)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(source, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder (``.<name>.<pid>.tmp``) to fill; on success it replaces ``path``
    (:func:`replace_directory`), on an exception it is deleted."""
    path = Path(path)
    tmp = temporary_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, path)
