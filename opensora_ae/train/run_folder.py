"""A run folder belongs to one run: ownership checks, the lock file, and ``--overwrite`` without data loss.

* A new run into a folder that already holds checkpoints or ``metrics.jsonl`` stops unless it resumes from that
  folder (``--load <folder>/epoch..``) or ``overwrite=True``.
* ``.lock`` (JSON ``host``, ``pid``) marks the folder as in use: a second process refuses to start; a lock left by
  a dead process on this host is taken over with a warning.
* ``overwrite=True`` moves the previous run's files into ``.replaced-<time>/`` and deletes them only once the new
  run has saved its first complete checkpoint (:meth:`RunFolder.drop_replaced`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from .checkpoint import list_checkpoints

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
REPLACED_PREFIX = ".replaced-"
RUN_FILES = ("metrics.jsonl",)  # besides checkpoint folders, files that mean "a run lives here"


class RunFolderError(RuntimeError):
    """The run folder holds another run or is in use; the message says what to pass instead."""


def held_run(run_dir: Path) -> str | None:
    """A one-phrase description of the run ``run_dir`` holds (``None`` when it holds none)."""
    checkpoints = list_checkpoints(run_dir)
    files = [name for name in RUN_FILES if (run_dir / name).is_file()]
    if not checkpoints and not files:
        return None
    parts = [f"{len(checkpoints)} checkpoints, latest {checkpoints[-1].name}"] if checkpoints else []
    return f"{run_dir.name} ({', '.join(parts + files)})"


def check_run_folder_free(run_dir: Path, load: str | None, overwrite: bool) -> None:
    """Raise unless a run may write into ``run_dir``: it holds no run, the run resumes from it, or ``overwrite``."""
    if overwrite or not run_dir.is_dir():
        return
    if load and Path(load).resolve().parent == run_dir.resolve():
        return
    held = held_run(run_dir)
    if held is not None:
        raise RunFolderError(f"run folder {run_dir} already holds run {held}; pass --load {run_dir}/<checkpoint> to "
                             f"resume it, or --overwrite True to replace it")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunFolder:
    """The run folder of this process: holds its lock from :meth:`acquire` until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = path / LOCK_NAME
        self.created = False
        self.locked = False
        self.started = False  # set once the run writes into the folder (config.py): from then on it is this run's
        self.replaced: Path | None = None  # where overwrite moved the previous run

    def acquire(self) -> None:
        """Create the folder if needed and take its lock; :class:`RunFolderError` when a live process holds it."""
        if not self.path.exists():
            self.path.mkdir(parents=True)
            self.created = True
        mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
        try:
            fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            self._take_over_stale(mine)
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(mine)
        self.locked = True

    def _take_over_stale(self, mine: str) -> None:
        try:
            holder = json.loads(self.lock.read_text())
            host, pid = str(holder["host"]), int(holder["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            raise RunFolderError(f"{self.lock}: unreadable lock file; if no run uses {self.path}, delete it") from None
        if host != socket.gethostname():
            raise RunFolderError(f"run folder {self.path} is in use by pid {pid} on host {host} ({self.lock}); wait "
                                 f"for that run to end, or delete the lock file if it is gone")
        if _pid_alive(pid):
            raise RunFolderError(f"run folder {self.path} is in use by pid {pid} on this host ({self.lock}); wait "
                                 f"for that run to end or pick another --save-dir")
        logger.warning("%s: taking over the lock of pid %d, which is no longer running", self.lock, pid)
        tmp = self.lock.with_name(f"{LOCK_NAME}.{os.getpid()}")
        tmp.write_text(mine)
        os.replace(tmp, self.lock)

    def set_aside_previous_run(self) -> Path | None:
        """``overwrite``: move everything of the previous run (but the lock and earlier set-aside runs) into a
        hidden ``.replaced-<time>`` folder; deleted by :meth:`drop_replaced` once the new run has a checkpoint."""
        entries = [p for p in self.path.iterdir() if p.name != LOCK_NAME and not p.name.startswith(REPLACED_PREFIX)]
        if not entries:
            return None
        aside = self.path / f"{REPLACED_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        aside.mkdir()
        for entry in entries:
            entry.rename(aside / entry.name)
        logger.warning("--overwrite: the previous run in %s is kept in %s until this run saves its first checkpoint",
                       self.path, aside.name)
        self.replaced = aside
        return aside

    def drop_replaced(self) -> None:
        """Delete the run :meth:`set_aside_previous_run` moved aside (call once the new run has a checkpoint)."""
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None

    def release(self, failed_before_start: bool = False) -> None:
        """Drop the lock (when still ours); ``failed_before_start`` also removes a folder this run created empty."""
        if self.locked and self._lock_is_mine():
            self.lock.unlink(missing_ok=True)
        self.locked = False
        if failed_before_start and self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def _lock_is_mine(self) -> bool:
        try:
            holder = json.loads(self.lock.read_text())
        except (OSError, ValueError):
            return False
        return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
