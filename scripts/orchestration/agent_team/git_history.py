"""What the repository's history says: changed files, merge bases, logs, merged or not.

`History` is `GitWorkspace.history`. Every query only reads: nothing here moves a ref or
touches a working tree, so callers ask freely from any thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import GitError
from .git_plumbing import FULL_SHA, check_rev, split_z

if TYPE_CHECKING:
    from .git_workspace import GitWorkspace

__all__ = ["History", "LogEntry"]


@dataclass(frozen=True)
class LogEntry:
    """A one-line commit summary for reports and prompts."""

    sha: str
    author_name: str
    author_email: str
    date: str
    subject: str


class History:
    """Read-only questions about commits and branches, through the workspace's git calls."""

    def __init__(self, git: GitWorkspace) -> None:
        self.git = git
        self._memo_lock = threading.Lock()
        self._changed_memo: dict[tuple[str, str], tuple[str, ...]] = {}

    def changed_files(self, base: str, head: str) -> list[str]:
        """Paths that differ between two commits; a rename is listed once, by its new path.

        Remembered for pairs of full commit ids (what they name never changes): a task asks
        for the files of its commit twice, for the commit event and for its result.
        """
        key = (base, head) if FULL_SHA.fullmatch(base) and FULL_SHA.fullmatch(head) else None
        if key is not None:
            with self._memo_lock:
                known = self._changed_memo.get(key)
            if known is not None:
                return list(known)
        rng = f"{check_rev(base)}..{check_rev(head)}"
        files = split_z(self.git._run("diff", "--name-only", "-M", "-z", "--no-ext-diff", rng))
        if key is not None:
            self.remember_changed(base, head, files)
        return files

    def remember_changed(self, base: str, head: str, files: list[str]) -> None:
        """Record what `changed_files(base, head)` is, known from elsewhere (a commit's
        staged files): full commit ids only, the newest 256 pairs."""
        with self._memo_lock:
            if len(self._changed_memo) >= 256:
                self._changed_memo.pop(next(iter(self._changed_memo)))
            self._changed_memo[(base, head)] = tuple(files)

    def merge_base(self, a: str, b: str) -> str:
        """The best common ancestor of two commits."""
        return self.git._run("merge-base", check_rev(a), check_rev(b)).strip()

    def tracked_files(self, ref: str = "HEAD", *, limit: int | None = None) -> list[str]:
        """Files in a commit's tree, sorted; the manager sees them when it plans."""
        files = split_z(self.git._run("ls-tree", "-r", "-z", "--name-only", check_rev(ref)))
        return files[:limit] if limit is not None else files

    def diff_stat(self, base: str, head: str) -> str:
        """`git diff --stat` between two commits, for reports."""
        rng = f"{check_rev(base)}..{check_rev(head)}"
        return self.git._run("diff", "--stat", "-M", "--no-color", "--no-ext-diff", rng)

    def log(self, ref: str = "HEAD", n: int = 10) -> list[LogEntry]:
        """The newest `n` commits reachable from `ref` (a range like `a..b` works too)."""
        fmt = "%H%x1f%an%x1f%ae%x1f%aI%x1f%s%x1e"
        output = self.git._run("log", f"-n{int(n)}", f"--format={fmt}", check_rev(ref), "--")
        entries = []
        for record in output.split("\x1e"):
            parts = record.strip("\n").split("\x1f")
            if len(parts) == 5:
                entries.append(LogEntry(*parts))
        return entries

    def is_merged(self, branch: str, into: str) -> bool:
        """Whether every commit of `branch` is already reachable from `into`."""
        status = self.git._status("merge-base", "--is-ancestor", check_rev(branch), check_rev(into))
        if status not in (0, 1):
            raise GitError(f"cannot compare {branch!r} with {into!r}: is either missing?")
        return status == 0

    def merge_commit_of(self, branch: str, into: str) -> str | None:
        """The first merge commit on `into` that brought in `branch`'s tip, if there is one."""
        rng = f"{check_rev(branch)}..{check_rev(into)}"
        out = self.git._run("rev-list", "--merges", "--ancestry-path", "--reverse", rng).split()
        return out[0] if out else None

    def unmerged_commits(self, branch: str, into: str) -> int:
        """How many commits of `branch` are not yet in `into`."""
        rng = f"{check_rev(into)}..{check_rev(branch)}"
        return int(self.git._run("rev-list", "--count", rng).strip())
