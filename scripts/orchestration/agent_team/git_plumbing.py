"""How the git wrapper calls git: one lock per repository, git's own error text, the extra
environment of one call, and reading `-z` output.

Shared by `git_workspace`, `git_worktrees`, `git_merge` and `git_history`; nothing outside
them needs it.
"""

from __future__ import annotations

import os
import re
import threading
import time
import zlib
from collections.abc import Mapping
from pathlib import Path

from git.exc import GitCommandError, GitCommandNotFound

from .errors import GitError

GIT_ERRORS = (GitCommandError, GitCommandNotFound)
#: A full commit id (SHA-1 or SHA-256): what it names never changes.
FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

class RepoLock:
    """A re-entrant lock that counts how long threads waited for it, for the benchmarks.

    Only what git itself must serialise takes it: branch creation and ref moves, merges into
    the feature branch, pruning, the shared exclude file. Adding, committing in and removing
    different worktrees run side by side.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.wait_seconds = 0.0
        self.held_seconds = 0.0
        self.acquisitions = 0
        self._depth = threading.local()

    def __enter__(self) -> RepoLock:
        start = time.perf_counter()
        self._lock.acquire()
        got = time.perf_counter()
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        if depth == 0:
            self.wait_seconds += got - start
            self.acquisitions += 1
            self._depth.since = got
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth.n -= 1
        if self._depth.n == 0:
            self.held_seconds += time.perf_counter() - self._depth.since
        self._lock.release()


_LOCKS: dict[str, RepoLock] = {}
_LOCKS_GUARD = threading.Lock()


def repo_lock(common_dir: Path) -> RepoLock:
    """One lock per repository, shared by every GitWorkspace opened on it in this process."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(common_dir), RepoLock())


def _unformat(stream: str, label: str) -> str:
    """GitPython pre-formats stderr/stdout in its exception; recover git's own text."""
    prefix = f"\n  {label}: '"
    if stream.startswith(prefix) and stream.endswith("'"):
        return stream[len(prefix) : -1]
    return stream


def git_error(exc: GitCommandError | GitCommandNotFound, where: Path) -> GitError:
    """A GitError naming the command, where it ran, its exit status and git's own output."""
    command = " ".join(str(part) for part in exc.command)
    if len(command) > 200:
        command = command[:197] + "..."
    output = "\n".join(
        text.strip()
        for text in (_unformat(exc.stderr, "stderr"), _unformat(exc.stdout, "stdout"))
        if text.strip()
    )
    return GitError(f"`{command}` failed in {where} (exit {exc.status}): {output or 'no output'}")


def identity(name: str, email: str) -> dict[str, str]:
    """Author and committer for one call, so commits work without user.name configured."""
    if not name.strip() or not email.strip():
        raise GitError("a commit needs a non-empty author name and email")
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def extra_config(settings: Mapping[str, str]) -> dict[str, str]:
    """Environment giving one git command extra `-c` settings, after any the user passed."""
    try:
        count = int(os.environ.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        count = 0
    env = {}
    for index, (key, value) in enumerate(settings.items(), start=count):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    env["GIT_CONFIG_COUNT"] = str(count + len(settings))
    return env


def split_z(output: str) -> list[str]:
    """The entries of NUL-separated (`-z`) output, which keeps odd file names intact."""
    return [item for item in output.split("\0") if item]


def check_rev(ref: str) -> str:
    """Refuse revisions git would parse as options."""
    if not ref or ref.startswith("-"):
        raise GitError(f"invalid revision {ref!r}")
    return ref


def loose_commit_parents(common_dir: Path, sha: str) -> list[str] | None:
    """The parents of a commit stored as a loose object, read without running git.

    A commit git has just made is loose (`objects/xx/yyyy...`, zlib-compressed, its header
    lines `tree`, then `parent` per parent). None when it is not there (packed, or in another
    object store): ask git then.
    """
    path = common_dir / "objects" / sha[:2] / sha[2:]
    try:
        with open(path, "rb") as handle:
            data = zlib.decompressobj().decompress(handle.read(), 4096)
    except (OSError, zlib.error):
        return None
    header, _, body = data.partition(b"\0")
    if not header.startswith(b"commit "):
        return None
    parents = []
    for line in body.split(b"\n")[1:]:  # the first is `tree`
        if not line.startswith(b"parent "):
            break
        parents.append(line[7:].decode("ascii"))
    return parents
