"""Merging a branch inside one worktree, and settling its conflicts.

`Merges` is `GitWorkspace.merges`: a merge that conflicts stays in progress so a resolver (the
manager, with file tools) can read the three sides of each file, write or pick a version, then
conclude the merge or abort it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .errors import GitError
from .git_plumbing import check_rev, identity, split_z
from .integrity import Expected, check_worktree
from .redaction import redact

if TYPE_CHECKING:
    from .git_workspace import GitWorkspace

_CONFLICT_MARKERS = (b"<<<<<<<", b">>>>>>>")
_BINARY_SNIFF = 8000


@dataclass(frozen=True)
class MergeResult:
    """Outcome of `Merges.merge`; on "conflict" the merge is left in progress."""

    status: Literal["merged", "conflict", "up_to_date"]
    commit: str | None = None
    conflicts: list[str] = field(default_factory=list)


def _is_binary(data: bytes) -> bool:
    """Whether a file must be handled as bytes: a NUL early on, or not UTF-8."""
    if b"\0" in data[:_BINARY_SNIFF]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


#: Hooks `git merge` runs; a repository with any of them always merges in the worktree.
MERGE_HOOKS = ("pre-merge-commit", "prepare-commit-msg", "commit-msg", "post-merge")


class Merges:
    """Merges with a merge commit, and the tools to resolve or undo a conflicted one.

    Into a worktree registered with `merge_without_checkout`, a merge that needs no resolution
    is made without touching its files: `git merge-tree --write-tree` computes the tree,
    `commit-tree` makes the merge commit and `update-ref` moves the branch (compare-and-swap).
    The worktree's files then lag behind its branch until `sync` (or any git command the
    workspace runs there) brings them up to date, writing only the files that changed. A
    conflict, a repository with merge hooks, or signed commits take the worktree path.
    """

    def __init__(self, git: GitWorkspace) -> None:
        self.git = git
        self._treeless: set[Path] = set()
        self.stale: set[Path] = set()  # worktrees whose files lag behind their branch
        self._trees: dict[str, str] = {}  # the tree of the last merge commit made here

    def merge_without_checkout(self, worktree: str | Path) -> bool:
        """Let clean merges into `worktree` skip its files; False when the repository's hooks
        or signing configuration need `git merge` itself."""
        directory = Path(worktree).expanduser().resolve()
        if any(hook in self.git.guard.hooks for hook in MERGE_HOOKS):
            return False
        signing = self.git._git("config", "--bool", "--get", "commit.gpgsign", check=False)
        if signing[0] == 0 and signing[1].strip() == "true":
            return False
        self._treeless.add(directory)
        return True

    def sync(self, worktree: str | Path) -> None:
        """Bring the files and index of `worktree` up to its branch after merges without it."""
        directory = Path(worktree).expanduser().resolve()
        if directory not in self.stale:
            return
        with self.git._lock:
            if directory in self.stale:
                self.stale.discard(directory)  # first: the reset below runs through _runner
                self.git._run("reset", "-q", "--hard", "HEAD", cwd=directory)

    def _merge_tree(self, directory: Path, expected: Expected, branch: str, message: str,
                    env: dict[str, str]) -> MergeResult | None:
        """The merge without the worktree; None when it conflicts (or git cannot tell)."""
        git = self.git
        theirs = git.ref_commit(branch)
        head_tree = self._trees.get(expected.head)
        if theirs is None or head_tree is None:
            status, out, _ = git._git("rev-parse", f"{expected.head}^{{tree}}",
                                      f"{check_rev(branch)}^{{commit}}", check=False)
            parts = out.split()
            if status != 0 or len(parts) != 2:
                return None
            head_tree, theirs = parts
        status, out, _ = git._git("merge-tree", "--write-tree", "--no-messages",
                                  expected.head, theirs, check=False)
        tree = out.split()[0] if status == 0 and out.split() else None
        if tree is None:
            return None
        if tree == head_tree and git._status(
                "merge-base", "--is-ancestor", theirs, expected.head) == 0:
            return MergeResult("up_to_date")
        sha = git._run("commit-tree", tree, "-p", expected.head, "-p", theirs, "-m", message,
                       env=env).strip()
        git._run("update-ref", "-m", f"merge {branch}", f"refs/heads/{expected.branch}", sha,
                 expected.head)
        self.stale.add(directory)
        git._advance_expected(directory, expected, sha, expected.head)
        self._trees = {sha: tree}  # the next merge starts from this commit
        return MergeResult("merged", sha)

    def merge(
        self,
        worktree: str | Path,
        branch: str,
        message: str,
        *,
        author_name: str,
        author_email: str,
    ) -> MergeResult:
        """Merge `branch` into whatever `worktree` has checked out, always with a merge commit.

        On conflict the merge stays in progress for a resolver; finish it with
        `conclude` or undo it with `abort`. Any other failure (local changes in the
        way, a refusing pre-merge-commit hook) leaves no merge in progress and raises GitError.
        """
        message = redact(message)  # agents' summaries end up in messages
        env = identity(author_name, author_email)
        directory = Path(worktree).expanduser().resolve()
        expected = self.git.expected.get(directory)
        with self.git._lock:
            if expected is not None:
                check_worktree(self.git, directory, expected)
                if directory in self._treeless:
                    done = self._merge_tree(directory, expected, branch, message, env)
                    if done is not None:
                        return done
            self.sync(directory)  # a conflict is resolved in the files: bring them up to date
            if expected is None and self.git._status(
                "merge-base", "--is-ancestor", check_rev(branch), "HEAD", cwd=worktree
            ) == 0:
                return MergeResult("up_to_date")
            try:
                self.git._run(
                    "merge", "--no-ff", "--no-edit", "-m", message, branch, cwd=worktree, env=env
                )
            except GitError as exc:
                if not self.in_progress(worktree):
                    raise
                conflicts = self.unmerged_paths(worktree)
                if not conflicts:
                    self.git._run("merge", "--abort", cwd=worktree)
                    raise GitError(
                        f"{exc}\n(the merge stopped without conflicts; aborted)"
                    ) from exc
                return MergeResult("conflict", None, conflicts)
            sha, parent = self.git.head_and_parent(worktree)
            if expected is not None:
                if sha == expected.head:  # git said "Already up to date": nothing to merge
                    return MergeResult("up_to_date")
                self.git._advance_expected(directory, expected, sha, parent)
            return MergeResult("merged", sha)

    def in_progress(self, worktree: str | Path) -> bool:
        """Whether `worktree` is in the middle of a merge (MERGE_HEAD exists)."""
        return self.git._status("rev-parse", "-q", "--verify", "MERGE_HEAD", cwd=worktree) == 0

    def unmerged_paths(self, worktree: str | Path) -> list[str]:
        """Paths the index still holds as conflicted."""
        output = self.git._run("diff", "--name-only", "--diff-filter=U", "-z", cwd=worktree)
        return sorted(set(split_z(output)))

    def _stages(self, worktree: str | Path, path: str) -> dict[int, str]:
        output = self.git._run("ls-files", "-u", "-z", cwd=worktree)
        stages: dict[int, str] = {}
        for entry in split_z(output):
            info, _, name = entry.partition("\t")
            if name == path:
                _, sha, stage = info.split()
                stages[int(stage)] = sha
        return stages

    def conflict_sides(self, worktree: str | Path, path: str) -> dict[str, object]:
        """The three versions of a conflicted file, for a resolver to read.

        Keys: "path", "binary", "base" (stage 1), "ours" (stage 2, the checked-out branch) and
        "theirs" (stage 3, the branch being merged). A side is None when absent (added or
        deleted on that side); for binary files the sides are raw bytes, never decoded.
        """
        stages = self._stages(worktree, path)
        if not stages:
            raise GitError(f"{path} is not in conflict in {worktree}")
        directory = Path(worktree).expanduser().resolve()
        blobs: dict[int, bytes] = {
            number: self.git._git(
                "cat-file",
                "blob",
                sha,
                cwd=directory,
                stdout_as_string=False,
                strip_newline_in_stdout=False,
            )[1]
            for number, sha in stages.items()
        }
        binary = any(_is_binary(data) for data in blobs.values())
        sides: dict[str, object] = {"path": path, "binary": binary}
        for number, name in ((1, "base"), (2, "ours"), (3, "theirs")):
            data = blobs.get(number)
            sides[name] = data if data is None or binary else data.decode("utf-8")
        return sides

    def take_side(
        self, worktree: str | Path, path: str, side: Literal["ours", "theirs"]
    ) -> None:
        """Settle one conflicted path by taking one side whole; the way to settle binaries."""
        stage = {"ours": 2, "theirs": 3}[side]
        stages = self._stages(worktree, path)
        if not stages:
            raise GitError(f"{path} is not in conflict in {worktree}")
        env = {"GIT_LITERAL_PATHSPECS": "1"}
        if stage in stages:
            self.git._run("checkout", f"--{side}", "--", path, cwd=worktree, env=env)
            self.git._run("add", "--", path, cwd=worktree, env=env)
        else:
            self.git._run("rm", "-q", "-f", "--", path, cwd=worktree, env=env)

    def abort(self, worktree: str | Path) -> bool:
        """Undo a merge in progress; returns False when there was none."""
        with self.git._lock:
            if not self.in_progress(worktree):
                return False
            self.git._run("merge", "--abort", cwd=worktree)
        return True

    def conclude(
        self,
        worktree: str | Path,
        message: str,
        *,
        author_name: str,
        author_email: str,
    ) -> str:
        """Commit a resolved merge; refuses while any file still looks conflicted.

        A conflicted text file counts as resolved once its conflict markers are gone; binary,
        deleted or symlinked conflicted paths must be staged explicitly (take_side).
        """
        message = redact(message)  # agents' summaries end up in messages
        env = identity(author_name, author_email)
        directory = Path(worktree).expanduser().resolve()
        expected = self.git.expected.get(directory)
        with self.git._lock:
            if not self.in_progress(directory):
                raise GitError(f"no merge in progress in {directory}")
            if expected is not None:
                check_worktree(self.git, directory, expected, merging=True)
            problems = self._unresolved(directory)
            if problems:
                raise GitError(
                    f"cannot conclude the merge in {directory}; still conflicted: "
                    + ", ".join(problems)
                )
            self.git._run("add", "--all", cwd=directory)
            self.git._run("commit", "-q", "--no-edit", "-m", message, cwd=directory, env=env)
            sha = self.git._run("rev-parse", "HEAD", cwd=directory).strip()
            if expected is not None:
                self.git._advance_expected(directory, expected, sha)
            return sha

    def _unresolved(self, directory: Path) -> list[str]:
        unmerged = set(self.unmerged_paths(directory))
        touched = set(split_z(self.git._run("diff", "--name-only", "-z", "HEAD", cwd=directory)))
        touched |= set(
            split_z(self.git._run("ls-files", "--others", "--exclude-standard", "-z",
                                  cwd=directory))
        )
        problems: list[str] = []
        for name in sorted(touched | unmerged):
            file = directory / name
            if file.is_symlink() or not file.is_file():
                if name in unmerged:
                    problems.append(f"{name} (unmerged)")
                continue
            data = file.read_bytes()
            if _is_binary(data):
                if name in unmerged:
                    problems.append(f"{name} (unmerged binary)")
                continue
            if any(line.startswith(_CONFLICT_MARKERS) for line in data.splitlines()):
                problems.append(f"{name} (conflict markers)")
        return problems
