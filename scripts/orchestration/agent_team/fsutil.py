"""All-or-nothing file writes, for every file the engine rewrites while others may read it.

The state file, recorded sessions and run reports are read by other threads, processes and
the team CLI while a run goes on, and a crash must never leave half of one behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

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
