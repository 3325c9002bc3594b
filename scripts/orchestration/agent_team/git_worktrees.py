"""The orchestrator's worktrees: adding, listing, pruning and removing them safely.

`Worktrees` is `GitWorkspace.worktrees`. Removing never discards uncommitted work unless asked
to, and worktrees an earlier run left behind are reported with what removing them would lose.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import GitError
from .git_plumbing import check_rev, extra_config

if TYPE_CHECKING:
    from .git_workspace import GitWorkspace


@dataclass(frozen=True)
class WorktreeInfo:
    """One entry of `git worktree list --porcelain`.

    `dirty` and `unmerged` are only filled in by `Worktrees.stale`; None elsewhere
    and whenever they cannot be known (the directory is gone).
    """

    path: Path
    branch: str | None
    head: str | None
    detached: bool = False
    locked: bool = False
    prunable: bool = False
    dirty: bool | None = None
    unmerged: int | None = None


#: Tries of `git worktree list` or `add` while a concurrent add leaves a half-written admin
#: directory.
_LIST_ATTEMPTS = 6


def _read_half_made(exc: GitError) -> bool:
    """Whether git failed on another worktree's admin directory that was still being made."""
    return "failed to read" in str(exc)


class Worktrees:
    """Linked worktrees of the repository, one per task and one for merging."""

    def __init__(self, git: GitWorkspace) -> None:
        self.git = git
        self._parallel_checkout: bool | None = None  # decided on the first add

    def add(
        self, path: str | Path, branch: str, *, start_point: str | None = None,
        checkout: bool = True,
    ) -> Path:
        """Check `branch` out in a new worktree at `path`, creating the branch when missing.

        An existing branch is checked out as it is and `start_point` is ignored; git refuses
        when that branch is already checked out in another worktree. A failing post-checkout
        hook makes git exit non-zero after the worktree was made; that worktree is used.
        Without `checkout` no file is written and the worktree has no index yet
        (`populated` is False) until a `reset --hard` there writes them.
        """
        target = Path(path).expanduser().resolve()
        self.git._check_branch_name(branch)
        env = self._checkout_env()
        # No repository lock: git locks the one ref it creates, so adds of different worktrees
        # run side by side and the checkout, most of the cost, never waits for a merge. Only a
        # prune must not run meanwhile (it deletes an admin directory git has just made and
        # not yet marked "initializing"): adds share the prune lock, prunes take it alone.
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._prune_lock(shared=True):
            self._add(target, branch, start_point, env, checkout)
        self.git._expect(target, branch)
        return target

    def _add(self, target: Path, branch: str, start_point: str | None,
             env: dict[str, str] | None, checkout: bool) -> None:
        """`git worktree add`, tried again when it read another add's half-made directory.

        Before it makes its own worktree, git reads every other one's admin directory and
        dies on one a concurrent add has created but not yet written ("failed to read
        .git/worktrees/<name>/commondir"). By then it may have created the new branch, so a
        retry checks that branch out as it is.
        """
        options = () if checkout else ("--no-checkout",)
        for attempt in range(_LIST_ATTEMPTS):
            try:
                if self.git.branch_exists(branch):
                    self.git._run("worktree", "add", *options, str(target), branch, env=env)
                else:
                    start = check_rev(start_point or "HEAD")
                    self.git._run(
                        "worktree", "add", *options, "--no-track", "-b", branch, str(target),
                        start, env=env,
                    )
                return
            except GitError as exc:
                made = self.git.is_worktree(target) and any(
                    info.path == target and info.branch == branch
                    for info in self.entries()
                )
                if made:
                    return
                if attempt == _LIST_ATTEMPTS - 1 or not _read_half_made(exc):
                    raise
                time.sleep(0.01 * (attempt + 1))

    @contextlib.contextmanager
    def _prune_lock(self, *, shared: bool) -> Iterator[None]:
        """A lock file in the git directory: every process of ours adding worktrees shares it,
        a prune holds it alone (job workers are separate processes on one repository)."""
        path = self.git.common_dir / "agent-team-worktrees.lock"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def clear_stale_locks(self, worktree: str | Path) -> list[Path]:
        """Remove `index.lock` of one of the orchestrator's worktrees, left by a killed git.

        Only for worktrees no git process can be using: the caller holds the run lock and no
        run of its own is under way. The user's own index is never touched.
        """
        admin = self.git._admin_dir(worktree)
        lock = admin / "index.lock" if admin is not None else None
        if lock is None or not lock.exists():
            return []
        lock.unlink()
        return [lock]

    def _checkout_env(self) -> dict[str, str] | None:
        """Parallel checkout for new worktrees, unless the repository sets checkout.workers.

        Writing the files of a fresh worktree is most of a task's overhead on large
        repositories; git's parallel checkout (one worker per core, only for checkouts of at
        least `checkout.thresholdForParallelism` files) cut it 2-3x at 10,000 files.
        """
        if self._parallel_checkout is None:
            configured = self.git._status("config", "--get", "checkout.workers") == 0
            self._parallel_checkout = not configured
        if not self._parallel_checkout:
            return None
        return extra_config({"checkout.workers": "0"})

    def populated(self, path: str | Path) -> bool:
        """Whether a worktree's files were ever written (one added without a checkout has no
        index until then)."""
        admin = self.git._admin_dir(path)
        return admin is None or (admin / "index").exists()

    def remove(self, path: str | Path, *, force: bool = False) -> None:
        """Remove a worktree, keeping its branch; uncommitted work is kept unless `force`."""
        target = Path(path).expanduser().resolve()
        self.git.expected.forget(target)
        # No repository lock: removing one worktree touches only its directory and its admin
        # entry, so removals run beside other tasks' adds, commits and merges.
        if not target.exists():
            self.prune()
            return
        if force:
            self.git._run("worktree", "remove", "--force", str(target))
            return
        # git checks for changes itself (one status scan of the whole tree); the list for
        # the message is only computed when it refuses. Untracked files always count.
        try:
            self.git._run(
                "worktree", "remove", str(target),
                env=extra_config({"status.showUntrackedFiles": "normal"}),
            )
        except GitError:
            changes = self._dirty_paths(target) if target.is_dir() else []
            if changes:
                raise GitError(
                    f"worktree {target} has uncommitted changes ({', '.join(changes[:10])}); "
                    "commit them or pass force=True to discard them"
                ) from None
            raise

    def entries(self) -> list[WorktreeInfo]:
        """All worktrees of the repository, the main one first.

        `git worktree list` fails ("failed to read .git/worktrees/<name>/commondir") while
        another thread's `git worktree add` has made the admin directory but not yet written
        it; adds take no repository lock, so that is retried, never reported as an error.
        """
        for attempt in range(_LIST_ATTEMPTS):
            try:
                output = self.git._run("worktree", "list", "--porcelain")
                break
            except GitError as exc:
                if attempt == _LIST_ATTEMPTS - 1 or not _read_half_made(exc):
                    raise
                time.sleep(0.01 * (attempt + 1))
        result: list[WorktreeInfo] = []
        for block in output.strip().split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                key, _, value = line.partition(" ")
                fields[key] = value
            if "worktree" not in fields or "bare" in fields:
                continue
            branch = fields.get("branch")
            result.append(
                WorktreeInfo(
                    path=Path(fields["worktree"]),
                    branch=branch.removeprefix("refs/heads/") if branch else None,
                    head=fields.get("HEAD") or None,
                    detached="detached" in fields,
                    locked="locked" in fields,
                    prunable="prunable" in fields,
                )
            )
        return result

    def branch_of(self, worktree: str | Path) -> str | None:
        """The branch checked out in `worktree` by git's own records, or None.

        Read from the worktree's admin directory (`HEAD` there): one file, not a listing of
        every worktree, so the cost does not grow with the run.
        """
        admin = self.git._admin_dir(worktree)
        if admin is None and Path(worktree).expanduser().resolve() == self.git.root:
            admin = self.git.common_dir
        if admin is None:
            return None
        try:
            head = (admin / "HEAD").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") \
            else None

    def prune(self) -> list[str]:
        """Drop administrative entries of worktrees whose directories are gone.

        Returns git's own lines, e.g. "Removing worktrees/x: gitdir file points to non-existent
        location". Locked worktrees are never pruned (git's rule).
        """
        with self.git._lock, self._prune_lock(shared=False):
            _, _, err = self.git._git("worktree", "prune", "--verbose")
        return [line.strip() for line in err.splitlines() if line.startswith("Removing ")]

    def stale(self, root: str | Path, *, into: str = "HEAD") -> list[WorktreeInfo]:
        """Worktrees left under `root` by an earlier run, with what removing them would lose.

        `dirty` says whether the directory holds uncommitted changes (None when it is gone);
        `unmerged` counts commits of its HEAD not reachable from `into`.
        """
        base = Path(root).expanduser().resolve()
        into_sha = self.git.head_commit(into)
        found: list[WorktreeInfo] = []
        for worktree in self.entries()[1:]:
            resolved = worktree.path.resolve()
            if resolved != base and base not in resolved.parents:
                continue
            dirty = None
            if resolved.is_dir() and not worktree.prunable:
                dirty = bool(self._dirty_paths(resolved))
            unmerged = None
            if worktree.head:
                unmerged = int(self.git._run("rev-list", "--count", f"{into_sha}..{worktree.head}"))
            found.append(replace(worktree, dirty=dirty, unmerged=unmerged))
        return found

    def _dirty_paths(self, worktree: Path) -> list[str]:
        output = self.git._run(
            "status",
            "--porcelain",
            "--untracked-files=normal",
            "--ignore-submodules=none",
            cwd=worktree,
        )
        return [line[3:] for line in output.splitlines() if line.strip()]
