"""The run lock: one orchestrator per repository, even when the lock file is deleted.

A lock held on a file protects nothing once the file is unlinked: the next process creates a
new file of the same name and locks that. So the lock that counts is a `flock` on the git
common directory itself, which cannot be swapped while the repository exists. The file lock
(`<git common dir>/agent-team-run.lock`) is still taken after it, for the tools that look for
that file (`co rollback`).

Both live in the git common directory, which the sandbox mounts read-only: agents can neither
delete the file nor reach the directory's lock. The kernel drops both when the process ends,
crash or not. Where `fcntl` does not exist (Windows) only the file lock is taken.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import filelock

from .errors import StateLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunLock"]

LOCK_NAME = "agent-team-run.lock"


class RunLock:
    """Exclusive, non-blocking; `acquire` raises StateLockedError while another run holds it."""

    def __init__(self, common_dir: str | os.PathLike[str], *, project: str = "") -> None:
        self.common_dir = Path(common_dir)
        self.path = self.common_dir / LOCK_NAME
        self.project = project or str(self.common_dir.parent)
        self._dir_fd: int | None = None
        self._file = filelock.FileLock(str(self.path), timeout=0)

    @property
    def held(self) -> bool:
        return self._file.is_locked and (fcntl is None or self._dir_fd is not None)

    def acquire(self) -> RunLock:
        self._lock_directory()
        try:
            self._file.acquire()
        except filelock.Timeout:
            self._unlock_directory()
            raise self._refusal() from None
        except BaseException:
            self._unlock_directory()
            raise
        return self

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self._file.release()
        self._unlock_directory()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _lock_directory(self) -> None:
        if fcntl is None or self._dir_fd is not None:
            return
        fd = os.open(self.common_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refusal() from None
        except BaseException:
            os.close(fd)
            raise
        self._dir_fd = fd

    def _unlock_directory(self) -> None:
        fd, self._dir_fd = self._dir_fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    def _refusal(self) -> StateLockedError:
        return StateLockedError(
            f"Another orchestrator is already running on {self.project} (it holds the run "
            f"lock on {self.common_dir}). Wait for it to finish, or watch it with "
            "`python scripts/orchestration/team.py status`; the lock is released "
            "automatically when that process ends."
        )
