"""All-or-nothing file writes, for every file the engine rewrites while others may read it.

The state file, recorded sessions and run reports are read by other threads, processes and
the team CLI while a run goes on, and a crash must never leave half of one behind.

`open_beneath` and its helpers are how agents' file tools touch files: component by component,
never through a link, never a file with a second hard link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from .errors import UnsafePath

#: Permission bits of a new file written with `keep_mode`, as `open` would give it.
NEW_FILE_MODE = 0o644


def write_atomic(
    path: Path, data: str | bytes, *, keep_mode: bool = False, sync_directory: bool = False
) -> None:
    """Replace `path` with `data` at once: a reader sees the old file or the new one.

    The data goes to a temporary file in the same directory (which must exist), is flushed
    and fsynced, then renamed over `path`. On any failure the temporary file is removed,
    `path` is left as it was and the error propagates. Text is written as UTF-8.

    Args:
        keep_mode: Give the new file the old one's permission bits (NEW_FILE_MODE when there
            was none) instead of the temporary file's 0o600.
        sync_directory: Also fsync the directory, so the rename itself survives a power cut.
    """
    binary = isinstance(data, bytes)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
            if keep_mode and hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), _mode_of(path))
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_directory:
        fsync_directory(path.parent)


def _mode_of(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return NEW_FILE_MODE


def fsync_directory(directory: Path) -> None:
    """Make a rename durable too; some platforms cannot open a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(
    os, "O_CLOEXEC", 0)


def open_beneath(
    root: Path, relative: str, flags: int, mode: int = 0o666, *, create_parents: bool = False
) -> int:
    """Open `relative` under `root` without following any link, even one swapped in meanwhile.

    Each component is opened relative to the directory opened before it (`dir_fd`) with
    `O_NOFOLLOW`, so a directory replaced by a symbolic link between a check and the open is
    refused (ELOOP/ENOTDIR) instead of followed. The file must be a regular file with a
    single link: a hard link to a file elsewhere would let a write land outside `root`. Open
    for writing without O_TRUNC; the caller truncates after this check (see `write_beneath`).

    Returns:
        An open file descriptor the caller must close.

    Raises:
        UnsafePath: a component is `..`, a link, or not a directory; the file has more than
            one hard link or is not a regular file.
        OSError: anything else the system says (missing file, permissions).
    """
    parts = [part for part in relative.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or ".." in parts or relative.startswith("/"):
        raise UnsafePath(f"{relative!r} is not a path beneath {root}")
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create_parents:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                next_fd = _open_dir(part, fd)
            except OSError as exc:
                raise UnsafePath(f"{part!r} in {relative!r} is a link or not a directory: "
                                 f"{exc.strerror}") from exc
            os.close(fd)
            fd = next_fd
        try:
            file_fd = os.open(parts[-1], flags | getattr(os, "O_NOFOLLOW", 0)
                              | getattr(os, "O_CLOEXEC", 0), mode, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise UnsafePath(f"{relative!r} is a symbolic link") from exc
            raise
    finally:
        os.close(fd)
    info = os.fstat(file_fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"{relative!r} is not a regular file"
    elif info.st_nlink > 1:
        problem = (f"{relative!r} has {info.st_nlink} hard links; a file with other names "
                   "could be outside the workspace")
    if problem:
        os.close(file_fd)
        raise UnsafePath(problem)
    return file_fd


def _open_dir(part: str, parent_fd: int) -> int:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise UnsafePath(f"{part!r} is a link or not a directory: {exc.strerror}") from exc


def read_beneath(root: Path, relative: str) -> bytes:
    """The whole content of a file beneath `root`, opened as `open_beneath` does."""
    fd = open_beneath(root, relative, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def write_beneath(root: Path, relative: str, data: bytes) -> None:
    """Create or replace a file beneath `root`, creating parent directories."""
    fd = open_beneath(root, relative, os.O_WRONLY | os.O_CREAT, create_parents=True)
    with os.fdopen(fd, "wb") as handle:
        handle.truncate(0)
        handle.write(data)
