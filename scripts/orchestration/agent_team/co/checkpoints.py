"""Checkpoints of the branches the tool owns and of the backlog, and rollbacks to them.

A checkpoint keeps every owned branch's commit as a ref under `refs/agent-team/checkpoints/<id>/`
(so git never garbage-collects it) and its record (description, branches, backlog snapshot) in
a `StorageInterface`. A rollback writes a backup ref under `refs/agent-team/backups/<stamp>/`
before it moves any branch, moves branches only with compare-and-swap, never moves a branch
that is checked out in any working tree (the user's included) and never touches a working tree:
new commits are built with a temporary index, reverts in a temporary worktree of its own.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import filelock

from ..errors import GitError, UserError
from ..git_plumbing import identity
from ..git_workspace import GitWorkspace
from .storage import JsonFileStorage, StorageInterface

NAMESPACE = "refs/agent-team/checkpoints"
BACKUPS = "refs/agent-team/backups"
INDEX_KEY = "checkpoints/index"
ROLLBACK_AUTHOR = identity("agent-team rollback", "rollback@agent-team.invalid")


class CheckpointType(str, Enum):
    MANUAL = "manual"
    AUTOMATIC = "automatic"
    PRE_RUN = "pre-run"
    PRE_MERGE = "pre-merge"


class RollbackStrategy(str, Enum):
    FULL = "full"
    PARTIAL = "partial"
    SELECTIVE = "selective"


@dataclass(frozen=True)
class Checkpoint:
    """What one checkpoint recorded."""

    checkpoint_id: str
    kind: str
    description: str
    created_at: str
    branches: dict[str, str]
    backlog: list[dict[str, Any]] | None = None
    files_commit: str | None = None
    files: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.checkpoint_id, "kind": self.kind, "description": self.description,
                "created_at": self.created_at, "branches": self.branches,
                "backlog": self.backlog, "files_commit": self.files_commit,
                "files": list(self.files)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(data["id"], data["kind"], data["description"], data["created_at"],
                   dict(data["branches"]), data.get("backlog"), data.get("files_commit"),
                   tuple(data.get("files") or ()))


@dataclass
class RollbackResult:
    """What a rollback did; `backup_ref` holds every branch tip it moved or deleted."""

    checkpoint_id: str
    strategy: str
    backup_ref: str
    moved: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    reverted: dict[str, str] = field(default_factory=dict)
    backlog_restored: bool = False

    @property
    def success(self) -> bool:
        return not self.skipped

    def lines(self) -> list[str]:
        out = [f"Rollback to checkpoint {self.checkpoint_id} ({self.strategy})."]
        for branch, (old, new) in self.moved.items():
            out.append(f"  {branch}: {_short(old)} -> {_short(new)}")
        for task, commit in self.reverted.items():
            out.append(f"  task {task}: merge reverted by {_short(commit)}")
        for what, why in self.skipped.items():
            out.append(f"  skipped {what}: {why}")
        if self.backlog_restored:
            out.append("  backlog restored")
        if self.moved or self.reverted:
            out.append(f"Previous tips are kept under {self.backup_ref}/heads/.")
        return out


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "(none)"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Git:
    """Plain git calls in one repository; the rollback needs a few the workspace lacks."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
                 cwd: Path | None = None, stdin: str | None = None) -> str:
        full_env = {**os.environ, **(env or {})}
        done = subprocess.run(["git", *args], cwd=cwd or self.root, env=full_env, text=True,
                              capture_output=True, input=stdin, check=False)
        if check and done.returncode != 0:
            raise GitError(f"`git {' '.join(args)}` failed in {cwd or self.root} "
                           f"(exit {done.returncode}): {done.stderr.strip() or 'no output'}")
        return done.stdout

    def rev(self, ref: str) -> str | None:
        out = self("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False).strip()
        return out or None


class RollbackManager:
    """Checkpoints and rollbacks of one repository's tool-owned branches and backlog."""

    def __init__(
        self,
        project_dir: str | Path = ".",
        *,
        storage: StorageInterface | None = None,
        owned_branches: Callable[[], Iterable[str]] | None = None,
        snapshot_backlog: Callable[[], list[dict[str, Any]]] | None = None,
        restore_backlog: Callable[[list[dict[str, Any]]], None] | None = None,
        merges_of_task: Callable[[str], Sequence[tuple[str, str]]] | None = None,
    ) -> None:
        self.workspace = GitWorkspace(Path(project_dir))
        self.root = self.workspace.root
        self.git = Git(self.root)
        common = Path(self.git("rev-parse", "--git-common-dir").strip())
        self.common_dir = common if common.is_absolute() else (self.root / common).resolve()
        self.storage = storage or JsonFileStorage(self.common_dir / "agent-team")
        self._owned = owned_branches or (lambda: ())
        self._snapshot = snapshot_backlog
        self._restore = restore_backlog
        self._merges_of_task = merges_of_task or (lambda task: ())

    # -- checkpoints -------------------------------------------------------------------------

    def owned(self) -> list[str]:
        """Owned branches that exist now, sorted."""
        return sorted({b for b in self._owned() if self.git.rev(f"refs/heads/{b}")})

    def create_checkpoint(
        self,
        checkpoint_type: CheckpointType | str = CheckpointType.MANUAL,
        description: str = "",
        include_files: Sequence[str] | None = None,
    ) -> str:
        """Record every owned branch and the backlog; returns the new checkpoint's id.

        `include_files` also snapshots those files as they are in the working directory now
        (committed or not) into a commit under the checkpoint's refs, without touching them.
        """
        kind = CheckpointType(checkpoint_type).value
        checkpoint_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        branches = {b: self.git("rev-parse", f"refs/heads/{b}").strip() for b in self.owned()}
        for branch, sha in branches.items():
            self.git("update-ref", f"{NAMESPACE}/{checkpoint_id}/heads/{branch}", sha)
        files_commit = None
        if include_files:
            files_commit = self._snapshot_files(include_files, checkpoint_id)
        record = Checkpoint(checkpoint_id, kind, description.strip() or kind, _now(), branches,
                            self._snapshot() if self._snapshot else None, files_commit,
                            tuple(include_files or ()))
        self.storage.save(f"checkpoints/{checkpoint_id}", record.to_json())
        index = list(self.storage.load(INDEX_KEY) or [])
        self.storage.save(INDEX_KEY, [*index, checkpoint_id])
        return checkpoint_id

    def _snapshot_files(self, files: Sequence[str], checkpoint_id: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), **ROLLBACK_AUTHOR}
            for name in files:
                path = (self.root / name).resolve()
                if self.root not in path.parents or not path.is_file():
                    raise UserError(f"{name!r} is not a file inside {self.root}; include_files "
                                    "takes paths of files in the working directory.")
                blob = self.git("hash-object", "-w", "--", str(path)).strip()
                rel = path.relative_to(self.root).as_posix()
                self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
            tree = self.git("write-tree", env=env).strip()
        commit = self.git("commit-tree", tree, "-m", f"Files of checkpoint {checkpoint_id}",
                          env=ROLLBACK_AUTHOR).strip()
        self.git("update-ref", f"{NAMESPACE}/{checkpoint_id}/files", commit)
        return commit

    def list_checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first."""
        found = []
        for checkpoint_id in self.storage.load(INDEX_KEY) or []:
            data = self.storage.load(f"checkpoints/{checkpoint_id}")
            if data is not None:
                found.append(Checkpoint.from_json(data))
        return found

    def get(self, checkpoint_id: str) -> Checkpoint:
        data = self.storage.load(f"checkpoints/{checkpoint_id}") if checkpoint_id else None
        if data is None:
            known = ", ".join(c.checkpoint_id for c in self.list_checkpoints()[-5:]) or "none"
            raise UserError(f"No checkpoint {checkpoint_id!r} (newest: {known}). "
                            "List them with `co list-checkpoints`.")
        return Checkpoint.from_json(data)

    # -- rollback ----------------------------------------------------------------------------

    def rollback(
        self,
        checkpoint_id: str,
        strategy: RollbackStrategy | str = RollbackStrategy.FULL,
        target_tasks: Sequence[str] | None = None,
        *,
        files: Sequence[str] | None = None,
    ) -> RollbackResult:
        """Go back to a checkpoint: FULL (branches and backlog), PARTIAL (`files` on every
        owned branch) or SELECTIVE (revert `target_tasks`' merges)."""
        checkpoint = self.get(checkpoint_id)
        chosen = RollbackStrategy(strategy)
        if chosen is RollbackStrategy.PARTIAL and not files:
            raise UserError("A partial rollback restores named files: pass --files PATH ...")
        if chosen is RollbackStrategy.SELECTIVE and not target_tasks:
            raise UserError("A selective rollback reverts named tasks: pass --tasks ID ...")
        stamp = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        result = RollbackResult(checkpoint.checkpoint_id, chosen.value, f"{BACKUPS}/{stamp}")
        lock = filelock.FileLock(str(self.common_dir / "agent-team-run.lock"), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise UserError("A run is going on in this repository; roll back after it ends "
                            "(nothing was changed).") from None
        try:
            checked_out = {w.branch: w.path for w in self.workspace.worktrees.entries()
                           if w.branch}
            if chosen is RollbackStrategy.FULL:
                self._full(checkpoint, result, checked_out)
            elif chosen is RollbackStrategy.PARTIAL:
                self._partial(checkpoint, list(files or ()), result, checked_out)
            else:
                self._selective(checkpoint, list(target_tasks or ()), result, checked_out)
        finally:
            lock.release()
        return result

    def _move(self, branch: str, new: str | None, result: RollbackResult,
              checked_out: dict[str, Path]) -> None:
        """Back up `branch`'s tip, then point it at `new` (None deletes it), by CAS."""
        ref = f"refs/heads/{branch}"
        old = self.git.rev(ref)
        if old == new:
            return
        if branch in checked_out:
            result.skipped[branch] = (f"checked out in {checked_out[branch]}; a checked-out "
                                      "branch is never moved")
            return
        if old is not None:
            self.git("update-ref", f"{result.backup_ref}/heads/{branch}", old)
        if new is None:
            self.git("update-ref", "-m", "agent-team: rollback", "-d", ref, old or "")
        else:
            self.git("update-ref", "-m", "agent-team: rollback", ref, new,
                     old or "0" * len(new))
        result.moved[branch] = (old, new)

    def _full(self, checkpoint: Checkpoint, result: RollbackResult,
              checked_out: dict[str, Path]) -> None:
        for branch, sha in checkpoint.branches.items():
            self._move(branch, sha, result, checked_out)
        for branch in self.owned():
            if branch not in checkpoint.branches:
                self._move(branch, None, result, checked_out)
        if checkpoint.backlog is not None and self._restore is not None:
            self._restore(checkpoint.backlog)
            result.backlog_restored = True

    def _partial(self, checkpoint: Checkpoint, files: list[str], result: RollbackResult,
                 checked_out: dict[str, Path]) -> None:
        for branch, saved in checkpoint.branches.items():
            tip = self.git.rev(f"refs/heads/{branch}")
            if tip is None or tip == saved:
                continue
            commit = self._commit_with_files(tip, saved, files, checkpoint.checkpoint_id)
            if commit is not None:
                self._move(branch, commit, result, checked_out)

    def _commit_with_files(self, tip: str, saved: str, files: list[str],
                           checkpoint_id: str) -> str | None:
        """A child of `tip` whose `files` are as in `saved`; None when nothing differs."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), **ROLLBACK_AUTHOR}
            self.git("read-tree", tip, env=env)
            now = set(self.git("ls-tree", "-r", "-z", "--name-only", tip, "--", *files)
                      .split("\0")) - {""}
            then = self.git("ls-tree", "-r", "-z", saved, "--", *files).split("\0")
            kept = set()
            for entry in filter(None, then):
                meta, path = entry.split("\t", 1)
                mode, _, sha = meta.split()
                self.git("update-index", "--add", "--cacheinfo", f"{mode},{sha},{path}", env=env)
                kept.add(path)
            for path in sorted(now - kept):
                self.git("update-index", "--force-remove", "--", path, env=env)
            tree = self.git("write-tree", env=env).strip()
        if tree == self.git("rev-parse", f"{tip}^{{tree}}").strip():
            return None
        message = f"Restore {', '.join(files)} from checkpoint {checkpoint_id}"
        return self.git("commit-tree", tree, "-p", tip, "-m", message, env=ROLLBACK_AUTHOR).strip()

    def _selective(self, checkpoint: Checkpoint, tasks: list[str], result: RollbackResult,
                   checked_out: dict[str, Path]) -> None:
        for task in tasks:
            merges = list(self._merges_of_task(task))
            if not merges:
                result.skipped[f"task {task}"] = "no merge recorded for this task"
            for branch, merge in merges:
                self._revert(task, branch, merge, checkpoint, result, checked_out)

    def _revert(self, task: str, branch: str, merge: str, checkpoint: Checkpoint,
                result: RollbackResult, checked_out: dict[str, Path]) -> None:
        tip = self.git.rev(f"refs/heads/{branch}")
        saved = checkpoint.branches.get(branch)
        if tip is None or not self._is_ancestor(merge, tip):
            result.skipped[f"task {task}"] = f"its merge {_short(merge)} is not on {branch}"
            return
        if saved is not None and self._is_ancestor(merge, saved):
            result.skipped[f"task {task}"] = (f"merged before checkpoint "
                                              f"{checkpoint.checkpoint_id}; pick an older one")
            return
        if branch in checked_out:
            result.skipped[f"task {task}"] = f"{branch} is checked out in {checked_out[branch]}"
            return
        parents = self.git("rev-list", "--parents", "-n", "1", merge).split()
        with tempfile.TemporaryDirectory(prefix="agent-team-revert-") as tmp:
            place = Path(tmp) / "tree"
            self.git("worktree", "add", "--detach", str(place), tip)
            try:
                args = ["revert", "--no-edit"] + (["-m", "1"] if len(parents) > 2 else [])
                done = self.git(*args, merge, cwd=place, env=ROLLBACK_AUTHOR, check=False)
                new = self.git("rev-parse", "HEAD", cwd=place).strip()
                if new == tip:  # conflicted (or nothing to revert): nothing moves
                    self.git("revert", "--abort", cwd=place, check=False)
                    result.skipped[f"task {task}"] = f"the revert conflicts: {done.strip()[:200]}"
                    return
            finally:
                self.git("worktree", "remove", "--force", str(place), check=False)
        self._move(branch, new, result, checked_out)
        if branch in result.moved:
            result.reverted[task] = new

    def _is_ancestor(self, commit: str, of: str) -> bool:
        done = subprocess.run(["git", "merge-base", "--is-ancestor", commit, of], cwd=self.root,
                              capture_output=True, check=False)
        return done.returncode == 0
