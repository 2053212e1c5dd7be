"""The run folder: writable, and used by one run at a time (a lock file with the owner's pid).

Two runs writing into one folder would replace each other's ``metrics.json``, mix their
TensorBoard events and resume from each other's checkpoints. :class:`RunLock` creates
``<run folder>/.accelopt.lock`` exclusively (``O_CREAT | O_EXCL``) holding the owner's host, pid and
start time; a second run finds it and is refused with one line. A lock left by a killed run is
*stale* when its host is this machine and its pid no longer runs: it is taken over with a
warning, so a killed job never blocks its resubmission. A lock from another host is honoured
(its pid cannot be checked from here); delete the file by hand if that run is gone. A SLURM job
that was requeued (same ``SLURM_JOB_ID``) takes over its own earlier lock on any node.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from types import TracebackType

from accelopt.config import ConfigError

__all__ = ["LOCK_NAME", "RunLock", "check_writable"]

LOCK_NAME = ".accelopt.lock"


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove it writable, or raise :class:`ConfigError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"run folder {str(folder)!r} is not writable ({err.strerror or err}): choose another "
            "with hydra.run.dir=... (or hydra.sweep.dir=... for -m), or fix its permissions."
        ) from err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(folder):`` holds ``folder``'s lock for the block (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._held = False

    def _owner(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return {}

    def acquire(self) -> None:
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.time(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid, host = owner.get("pid"), owner.get("host")
                requeued = me["slurm_job"] is not None and owner.get("slurm_job") == me["slurm_job"]
                dead = host == me["host"] and isinstance(pid, int) and not _alive(pid)
                if dead or requeued:
                    why = "the same SLURM job, requeued" if requeued else "no longer running"
                    warnings.warn(
                        f"removing the stale lock {str(self.path)!r} of process {pid} ({why})",
                        stacklevel=2,
                    )
                    self.path.unlink(missing_ok=True)
                    continue
                if not owner:  # being written right now, or garbage: give it a moment
                    time.sleep(0.2)
                    if not self._owner():
                        self.path.unlink(missing_ok=True)
                    continue
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner["since"])))
                raise ConfigError(
                    f"run folder {str(self.path.parent)!r} is in use by process {pid} on {host} "
                    f"(since {since}): wait for it to finish, or use another folder with "
                    f"hydra.run.dir=... (delete {self.path.name} there only if that run is gone)."
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            return
        raise ConfigError(f"could not take the lock {str(self.path)!r}; try again.")

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
