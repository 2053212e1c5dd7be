"""The run folder: writable, and used by one run at a time (a lock file with the owner's pid).

Two runs writing into one folder would replace each other's ``metrics.json``, mix their
TensorBoard events and resume from each other's checkpoints. :class:`RunLock` holds
``<run folder>/.accelopt.lock``: an exclusive ``fcntl.flock`` on the file is the ownership (the
OS releases it when its process ends, however it ends, so two processes can never both hold it),
and the file's content names the owner (host, pid, start time) for the refusal message. A second
run is refused with one line. A file left by a killed run (no flock held) is *stale* when its
host is this machine and its pid no longer runs: it is taken over with a warning, so a killed job
never blocks its resubmission; the takeover happens under the flock, so concurrent takers cannot
both win. A lock written on another host is honoured (its pid cannot be checked from here, and
not every network file system shares flocks between hosts); delete the file by hand if that run
is gone. A SLURM job that was requeued (same ``SLURM_JOB_ID``) takes over its own earlier lock
on any node. On a file system without ``flock`` the file's content is the only check.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from accelopt.errors import ConfigError
from accelopt.fileio import atomic_write

try:
    import fcntl
except ImportError:  # not POSIX: the lock file's content is the only check
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "HYDRA_SUBDIR",
    "LOCK_NAME",
    "OutputFolderCheck",
    "RunLock",
    "check_writable",
    "write_hydra_files",
]

LOCK_NAME = ".accelopt.lock"
HYDRA_SUBDIR = ".hydra"


def write_hydra_files(out: Path, cfg: DictConfig) -> None:
    """Hydra's record of the run, ``<out>/.hydra/{config,hydra,overrides}.yaml``, as Hydra writes it.

    ``conf/train.yaml`` sets ``hydra.output_subdir: null``, so Hydra writes nothing into the run
    folder before the job starts; :func:`accelopt.train.train` calls this once the run is
    accepted (lock taken, config and checkpoint identity checked), so a refused run leaves the
    folder's config as it was. ``hydra.yaml`` and ``overrides.yaml`` need Hydra's runtime
    config (a Hydra job, or :func:`accelopt.train.compose_config`); ``config.yaml`` is always
    written.
    """
    from hydra.core.hydra_config import HydraConfig

    files = {"config.yaml": OmegaConf.to_yaml(cfg)}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.instance().cfg
        files["hydra.yaml"] = OmegaConf.to_yaml(hydra_cfg)
        files["overrides.yaml"] = OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task)
    for name, text in files.items():
        atomic_write(out / HYDRA_SUBDIR / name, text)


def check_writable(folder: Path, what: str = "run folder") -> None:
    """Create ``folder`` if needed and prove it writable, or raise :class:`ConfigError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        where = (
            "hydra.run.dir=... (or hydra.sweep.dir=... for -m)"
            if what == "run folder"
            else "callbacks.checkpoint.dirpath=..."
        )
        raise ConfigError(
            f"{what} {str(folder)!r} is not writable ({err.strerror or err}): choose another "
            f"with {where}, or fix its permissions."
        ) from err


class OutputFolderCheck(Callback):
    """A Hydra callback (``hydra.callbacks`` in ``conf/train.yaml``): before Hydra creates the run
    folder (or, for ``-m``, the sweep folder and its ``multirun.yaml``), an existing folder or its
    nearest existing parent that cannot be written is one line and exit status 2, not Hydra's
    traceback. (:func:`check_writable` in ``train`` checks each job's own folder again.)
    """

    def _check(self, config: DictConfig, key: str) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)  # as Hydra does before it resolves the folder
        folder = Path(str(OmegaConf.select(config, key))).absolute()
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            what = "" if existing == folder else f" (its parent {str(existing)!r} is read-only)"
            print(
                f"accelopt: error: run folder {str(folder)!r} is not writable{what}: choose another "
                f"with {key}=..., or fix its permissions.",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")


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
        self._fd: int | None = None

    def _owner(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return {}

    def _refuse(self, owner: dict[str, object]) -> ConfigError:
        pid, host = owner.get("pid", "?"), owner.get("host", "?")
        since = owner.get("since")
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(since)))
            if isinstance(since, int | float)
            else "unknown"
        )
        return ConfigError(
            f"run folder {str(self.path.parent)!r} is in use by process {pid} on {host} "
            f"(since {when}): wait for it to finish, or use another folder with "
            f"hydra.run.dir=... (delete {self.path.name} there only if that run is gone)."
        )

    def _open_locked(self) -> tuple[int, bool]:
        """An open descriptor of the lock file, flock-ed; (fd, False) where flock is unsupported."""
        for _ in range(50):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is None:
                return fd, False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = self._owner()
                for _ in range(10):  # the holder may not have written its name yet
                    if owner:
                        break
                    time.sleep(0.05)
                    owner = self._owner()
                raise self._refuse(owner) from None
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                return fd, False
            try:  # the holder before us may have removed the file while we opened it
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd, True
            os.close(fd)
        raise ConfigError(f"could not take the lock {str(self.path)!r}; try again.")

    def acquire(self) -> None:
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.time(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
        }
        fd, _ = self._open_locked()
        try:
            owner = self._owner()
            if owner:
                pid, host = owner.get("pid"), owner.get("host")
                requeued = me["slurm_job"] is not None and owner.get("slurm_job") == me["slurm_job"]
                dead = host == me["host"] and isinstance(pid, int) and not _alive(pid)
                if not (dead or requeued or pid == me["pid"] and host == me["host"]):
                    raise self._refuse(owner)
                why = "the same SLURM job, requeued" if requeued else "no longer running"
                warnings.warn(
                    f"taking over the stale lock {str(self.path)!r} of process {pid} ({why})",
                    stacklevel=2,
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()  # before the flock goes: a waiting opener retries
            os.close(self._fd)
            self._fd = None

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
