"""The package's one atomic-write helper (standard library only).

A reader of ``path`` sees either the old file or the new one, never a partial write: the data
goes to ``<path>.tmp-<pid>`` in the same folder, is flushed and fsync'ed, then renamed over
``path`` with :func:`os.replace` (atomic on POSIX and Windows for files on one file system).
"""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path

__all__ = ["atomic_write", "file_mode"]

TMP_MARK = ".tmp-"


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: ``0o666 & ~umask``."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort: not every OS or file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (assumed alive where that cannot be told)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def _remove_stale(path: Path) -> None:
    """Remove ``<name>.tmp-<pid>`` siblings left by killed writers (their process is gone).

    Temp files of writers that are still running are left alone, so concurrent writers of one
    path do not break each other's rename.
    """
    for stale in path.parent.glob(glob.escape(path.name) + TMP_MARK + "*"):
        pid = stale.name[len(path.name) + len(TMP_MARK) :]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                stale.unlink()


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Replace ``path`` atomically with ``data`` (``str`` is written as UTF-8).

    Creates the parent folders. On any error the temporary file is removed and the error
    re-raised, leaving an existing ``path`` untouched. The new file gets the usual
    umask-respecting mode (``0o666 & ~umask``). After the rename, temporary siblings left by
    writers that were killed (``<name>.tmp-<pid>`` of a process that no longer exists) are removed.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write: data must be bytes or str, got {type(data).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    _remove_stale(path)
