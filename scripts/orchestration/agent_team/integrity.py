"""Integrity checks before each commit and merge: git is where the orchestrator left it.

An agent's command (with the sandbox off, or through a hole in it) could check out another
branch in its worktree, move a branch with `update-ref`, point its worktree's `.git` file at
another task's gitdir, or commit in the user's checkout. None of that may turn into a lost
commit or a SUCCESS that is not one: before the orchestrator commits or merges in a worktree,
`check_worktree` compares it with what the orchestrator expects (`Expected`), and branches the
run owns move only by `move_branch`: compare-and-swap, forward only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import GitError, IntegrityError
from .git_env import GitGuard


class _History(Protocol):
    def is_merged(self, branch: str, into: str) -> bool: ...


class GitWorkspace(Protocol):
    """What these checks need of `git_workspace.GitWorkspace` (a Protocol: no import cycle)."""

    guard: GitGuard

    @property
    def history(self) -> _History: ...
    def _admin_dir(self, path: str | Path) -> Path | None: ...
    def _run(self, cmd: str, *args: str) -> str: ...
    def resolve(self, ref: str) -> str | None: ...
    def ref_commit(self, branch: str) -> str | None: ...

__all__ = [
    "Expected",
    "ExpectedHeads",
    "IntegrityError",
    "check_worktree",
    "move_branch",
    "moved_refs",
    "ref_snapshot",
]

_IN_PROGRESS = ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "rebase-merge", "rebase-apply")


@dataclass(frozen=True)
class Expected:
    """What a worktree of the orchestrator's must look like before its next commit or merge."""

    branch: str
    head: str
    admin_dir: Path


class ExpectedHeads:
    """The orchestrator's own record of its worktrees, kept in memory, never on disk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_path: dict[Path, Expected] = {}

    def set(self, worktree: Path, expected: Expected) -> None:
        with self._lock:
            self._by_path[Path(worktree).resolve()] = expected

    def get(self, worktree: Path) -> Expected | None:
        with self._lock:
            return self._by_path.get(Path(worktree).resolve())

    def forget(self, worktree: Path) -> None:
        with self._lock:
            self._by_path.pop(Path(worktree).resolve(), None)


def _fail(worktree: Path | None, reason: str) -> IntegrityError:
    where = f" in {worktree}" if worktree is not None else ""
    return IntegrityError(
        f"Integrity check failed{where}: {reason}. Nothing was committed, merged or moved; the "
        "files and every commit are kept as they are for you to inspect.",
        worktree=worktree, reason=reason,
    )


def check_worktree(
    git: GitWorkspace, worktree: Path, expected: Expected, *, merging: bool = False
) -> None:
    """Refuse to commit or merge unless `worktree` is exactly what the orchestrator left.

    Checked: its `.git` file names its own gitdir (and that gitdir names it back), HEAD is
    the expected branch, that branch is at the expected commit, no other operation (rebase,
    cherry-pick, or a merge when none is expected) is in progress, no per-worktree config was
    added, and the repository's config is the user's.

    Raises:
        IntegrityError: with the reason; nothing is changed.
    """
    worktree = Path(worktree).resolve()
    admin = git._admin_dir(worktree)  # noqa: SLF001 - the workspace's own reading of .git
    if admin is None or admin != expected.admin_dir:
        raise _fail(worktree, f"its .git file no longer names its own git directory "
                              f"({expected.admin_dir}); it was rewritten")
    try:
        back = Path((admin / "gitdir").read_text(encoding="utf-8").strip()).resolve()
    except OSError:
        back = None
    if back != worktree / ".git":
        raise _fail(worktree, f"its git directory {admin} belongs to {back}, not to it")
    head = _read(admin / "HEAD")
    if head != f"ref: refs/heads/{expected.branch}":
        raise _fail(worktree, f"HEAD is {head!r}, expected branch {expected.branch} (a "
                              "command checked out something else)")
    tip = git.ref_commit(expected.branch)
    if tip != expected.head:
        raise _fail(worktree, f"branch {expected.branch} is at {tip}, expected {expected.head} "
                              "(it was moved by something other than the orchestrator)")
    for marker in _IN_PROGRESS:
        if marker == "MERGE_HEAD" and merging:
            continue
        if (admin / marker).exists():
            raise _fail(worktree, f"an operation is in progress ({marker})")
    if (admin / "config.worktree").exists():
        raise _fail(worktree, "a per-worktree git config (config.worktree) was added")
    git.guard.check_config()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def move_branch(git: GitWorkspace, branch: str, new: str, *, expected_old: str) -> None:
    """Move a run-owned branch by compare-and-swap, and only forward.

    Raises:
        IntegrityError: the branch is not at `expected_old` (someone moved it), or `new` does
            not descend from it (the move would drop commits).
    """
    current = git.resolve(f"refs/heads/{branch}")
    if current != expected_old:
        raise _fail(None, f"branch {branch} is at {current}, expected {expected_old}")
    if not git.history.is_merged(expected_old, new):
        raise _fail(None, f"moving {branch} to {new} would drop commits of {expected_old}")
    try:
        git._run("update-ref", "-m", "agent-team: forward", f"refs/heads/{branch}",  # noqa: SLF001
                 new, expected_old)
    except GitError as exc:
        raise _fail(None, f"branch {branch} moved while it was being updated: {exc}") from exc


def ref_snapshot(git: GitWorkspace) -> dict[str, str]:
    """Every local branch and its commit, to tell later which ones moved."""
    out = git._run("for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/")  # noqa: SLF001
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def moved_refs(
    git: GitWorkspace, before: dict[str, str], *, owned: tuple[str, ...]
) -> list[str]:
    """Branches not owned by the run (no `owned` prefix) that moved, appeared or vanished."""
    after = ref_snapshot(git)
    changed = []
    for ref in sorted(set(before) | set(after)):
        name = ref.removeprefix("refs/heads/")
        if any(name.startswith(prefix) for prefix in owned):
            continue
        if before.get(ref) != after.get(ref):
            changed.append(f"{name}: {before.get(ref, 'absent')} -> {after.get(ref, 'absent')}")
    return changed
