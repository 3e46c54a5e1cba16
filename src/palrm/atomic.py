"""Atomic writes: build a file or a directory beside its target, then swap it in.

Every writer in palrm that replaces something on disk goes through this module
(`atomic_file` for one file, `atomic_directory` for a folder):

* the new content is written under a unique temporary name in the target's own folder (so the final
  `os.replace` is a rename within one filesystem), and flushed to disk with ``fsync``;
* the rename is made durable by fsyncing the parent directory;
* a crash or an exception while writing leaves any earlier file or directory at the target intact,
  and removes the temporary;
* a reader never sees a half-written target. Directories cannot be swapped in one rename, so an
  existing directory is first renamed to a unique backup ``.NAME.old-<pid>-<random>``; only the short
  window between the two renames has no directory at the target, and the previous one is then still
  on disk under that backup name (`backups` lists them, newest first).

Temporary names are ``.NAME.tmp-<random>``; `is_temporary` recognises them so that a reader that
scans a folder (the embedding cache) can skip or clean up what a crashed writer left.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_directory", "atomic_file", "atomic_write_bytes", "backups", "fsync_directory", "is_temporary"]

_TMP = ".tmp-"
_OLD = ".old-"


def _unique(target: Path, mark: str) -> Path:
    """A fresh sibling name ``.NAME<mark><pid>-<random>`` (unique across processes and threads)."""
    return target.with_name(f".{target.name}{mark}{os.getpid()}-{uuid.uuid4().hex[:12]}")


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is a temporary of `atomic_file` / `atomic_directory`."""
    return name.startswith(".") and _TMP in name


def backups(target: str | os.PathLike) -> list[Path]:
    """Backups of `target` left by an `atomic_directory` swap that was interrupted, newest first."""
    target = Path(target)
    found = [p for p in target.parent.glob(f".{target.name}{_OLD}*") if p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory's entries (names created, renamed or removed in it) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; write the file there, and on normal exit it replaces `target`.

    The temporary file is fsynced, renamed onto `target` and the folder fsynced. On an exception
    it is deleted and `target` is left as it was. Works for any writer that takes a path
    (``frame.to_parquet(tmp)``, ``save_file(tensors, tmp)``, ``open(tmp, "w")``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique(target, _TMP)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
        fsync_directory(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `target` atomically (see `atomic_file`); returns `target` as a Path."""
    with atomic_file(target) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)
    return Path(target)


@contextmanager
def atomic_directory(target: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory; on normal exit it replaces `target` (created or swapped in).

    With `fsync` (the default), every file written and every folder is flushed to disk before the
    directory becomes visible, and the parent folder after the renames.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique(target, _TMP)
    tmp.mkdir()
    try:
        yield tmp
        if fsync:
            for path in sorted(tmp.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if path.is_file() and not path.is_symlink():
                    _fsync_file(path)
                elif path.is_dir():
                    fsync_directory(path)
            fsync_directory(tmp)
        if target.exists():
            old = _unique(target, _OLD)
            os.replace(target, old)
            os.replace(tmp, target)
            if fsync:
                fsync_directory(target.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        if fsync:
            fsync_directory(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
