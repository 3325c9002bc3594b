"""A thin GitPython wrapper: branches, worktrees, commits and merges for the agent team.

Every task works in its own linked worktree, so the user's checked-out branch, index and
uncommitted changes are never touched: nothing here checks out, resets or stages anything in the
main working tree. All git calls go through `repo.git.<cmd>` (or a `git.Git` bound to one
worktree) and failures become `GitError` carrying git's own stderr.

`GitWorkspace` holds the repository, the calls, refs and commits; it builds one object per
other concern: `worktrees` (git_worktrees.py), `merges` (git_merge.py) and `history`
(git_history.py, read-only queries).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import git
from git.exc import GitCommandNotFound, InvalidGitRepositoryError, NoSuchPathError

from .errors import CommitRefused, GitError, IntegrityError, NotAGitRepository
from .git_env import GitGuard
from .git_history import History
from .git_merge import Merges
from .git_plumbing import (
    FULL_SHA,
    GIT_ERRORS,
    check_rev,
    git_error,
    identity,
    loose_commit_parents,
    repo_lock,
    split_z,
)
from .git_worktrees import Worktrees
from .integrity import Expected, ExpectedHeads, check_worktree
from .redaction import redact

__all__ = [
    "JUNK_PATHSPECS",
    "GitWorkspace",
    "is_inside_work_tree",
    "slugify",
]

_OPEN_ERRORS = (InvalidGitRepositoryError, NoSuchPathError)

#: Build and cache output that never belongs in an agent's commit, whatever the project's
#: .gitignore says (a project without one would otherwise get bytecode committed).
JUNK_PATHSPECS = (
    ":(exclude,glob)**/__pycache__/**",
    ":(exclude,glob)**/*.py[co]",
    ":(exclude,glob)**/.pytest_cache/**",
    ":(exclude,glob)**/.mypy_cache/**",
    ":(exclude,glob)**/.ruff_cache/**",
    ":(exclude,glob)**/.DS_Store",
)


def slugify(text: str, max_len: int = 40) -> str:
    """Turn free text (a feature title, a task id) into a safe branch-name component.

    Only lowercase ascii letters, digits and single dashes survive, which `git check-ref-format`
    always accepts; an empty result becomes "untitled" so callers never build `feature/`.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_len:
        cut = slug[: max(1, max_len)]
        # Prefer ending on a whole word when that keeps at least half the allowed length.
        boundary = cut.rfind("-")
        slug = cut[:boundary] if boundary >= max_len // 2 else cut
    slug = slug.rstrip("-")
    return slug or "untitled"


def _packed_ref(common_dir: Path, name: str) -> str | None:
    """The sha `packed-refs` gives the full ref `name`, or None."""
    try:
        with open(common_dir / "packed-refs", encoding="utf-8") as packed:
            for line in packed:
                sha, _, ref = line.rstrip("\n").partition(" ")
                if ref == name:
                    return sha
    except (OSError, UnicodeDecodeError):
        return None
    return None


def is_inside_work_tree(path: str | Path) -> bool:
    """Whether `path` lies in some git working tree; never raises, for up-front checks."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        return False
    try:
        status, out, _ = git.Git(str(directory)).rev_parse(
            "--is-inside-work-tree", with_extended_output=True, with_exceptions=False
        )
    except GitCommandNotFound:
        return False
    return status == 0 and out.strip() == "true"


#: Hooks `git commit` runs that may change what it commits (by staging more).
COMMIT_HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg")


class GitWorkspace:
    """The orchestrator's only door to git for one repository: refs and commits here.

    Worktree operations are `worktrees` (git_worktrees.py), merges and conflicts `merges`
    (git_merge.py), history queries `history` (git_history.py); all act through this object's
    git calls and locks.
    """

    def __init__(self, project_dir: str | Path) -> None:
        path = Path(project_dir).expanduser()
        if not path.is_dir():
            raise NotAGitRepository(
                f"{path} does not exist or is not a directory; pass --project-dir pointing to "
                "your git repository"
            )
        try:
            self._repo = git.Repo(path, search_parent_directories=True)
        except _OPEN_ERRORS as exc:
            raise NotAGitRepository(
                f"{path} is not inside a git repository; run `git init` there and make an "
                "initial commit first"
            ) from exc
        if self._repo.bare or self._repo.working_tree_dir is None:
            raise NotAGitRepository(
                f"{path} is a bare repository; clone it and point --project-dir at the clone"
            )
        if self._status("rev-parse", "-q", "--verify", "HEAD^{commit}") != 0:
            raise NotAGitRepository(
                f"the repository at {path} has no commits yet; make an initial commit first "
                "(for example `git commit --allow-empty -m 'initial commit'`)"
            )
        self.root = Path(self._run("rev-parse", "--show-toplevel")).resolve()
        self.common_dir = Path(
            self._run("rev-parse", "--path-format=absolute", "--git-common-dir")
        ).resolve()
        self._lock = repo_lock(self.common_dir)
        #: Hooks, global config and `.git/config` as they are now; see git_env.py.
        self.guard = GitGuard.take(self.root, self.common_dir)
        #: Branch and commit each of the orchestrator's worktrees must be at; see integrity.py.
        self.expected = ExpectedHeads()
        self.worktrees = Worktrees(self)
        self.merges = Merges(self)
        self.history = History(self)

    @property
    def repo(self) -> git.Repo:
        """The underlying GitPython repository, for callers that need more than this class."""
        return self._repo

    # -- plumbing ---------------------------------------------------------------------------

    def _runner(self, cwd: str | Path | None) -> tuple[git.Git, Path]:
        if cwd is None:
            return self._repo.git, Path(str(self._repo.working_tree_dir))
        directory = Path(cwd).expanduser().resolve()
        if not directory.is_dir():
            raise GitError(f"worktree {directory} does not exist")
        if not self.is_worktree(directory):
            raise GitError(
                f"{directory} is no longer a worktree of {self.root}: its .git file is missing or "
                "points elsewhere (was the directory deleted and re-created?). git was not run "
                "there, because it would have acted on the enclosing repository instead."
            )
        if self.merges.stale and directory in self.merges.stale:
            self.merges.sync(directory)  # merges moved its branch: files first, then the command
        return git.Git(str(directory)), directory

    def is_worktree(self, path: str | Path) -> bool:
        """Whether `path` is the top of a linked worktree of this repository.

        Read from its `.git` file alone. The user's own working tree is never one: what the
        orchestrator runs in a worktree (add, reset, merge) must never reach the user's checkout.
        """
        return self._admin_dir(path) is not None

    def _admin_dir(self, path: str | Path) -> Path | None:
        """The `<common dir>/worktrees/<name>` directory a linked worktree's `.git` names."""
        marker = Path(path).expanduser() / ".git"
        try:
            text = marker.read_text(encoding="utf-8") if marker.is_file() else ""
        except (OSError, UnicodeDecodeError):
            return None
        if not text.startswith("gitdir:"):
            return None
        admin = Path(text.removeprefix("gitdir:").strip())
        if not admin.is_absolute():
            admin = marker.parent / admin
        admin = admin.resolve()
        return admin if (self.common_dir / "worktrees") in admin.parents else None

    def _git(
        self,
        cmd: str,
        *args: str,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        **options: bool,
    ) -> tuple[int, Any, str]:
        """Run `git <cmd>` through GitPython; (status, stdout, stderr), GitError when checked.

        Every call gets the guard's environment (no secrets, the snapshot configuration) and
        first checks that `.git/config` is still the user's (GitConfigChanged otherwise).
        """
        runner, where = self._runner(cwd)
        guard = getattr(self, "guard", None)  # None only while __init__ opens the repository
        if guard is not None:
            guard.check_config()
            env = guard.environment(env)
        try:
            status, out, err = getattr(runner, cmd)(
                *args,
                env=dict(env) if env else None,
                with_extended_output=True,
                with_exceptions=check,
                **options,
            )
        except GIT_ERRORS as exc:
            raise git_error(exc, where) from exc
        return int(status), out, err

    def _run(
        self,
        cmd: str,
        *args: str,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        return self._git(cmd, *args, cwd=cwd, env=env)[1]

    def _status(self, cmd: str, *args: str, cwd: str | Path | None = None) -> int:
        """Exit status of a command whose answer *is* its status (show-ref, is-ancestor)."""
        return self._git(cmd, *args, cwd=cwd, check=False)[0]

    # -- refs -------------------------------------------------------------------------------

    def current_branch(self) -> str | None:
        """The branch checked out in this workspace's directory, None on a detached HEAD."""
        status, out, _ = self._git("symbolic-ref", "-q", "--short", "HEAD", check=False)
        return (out.strip() or None) if status == 0 else None

    def resolve(self, ref: str) -> str | None:
        """The commit sha `ref` names, or None when it names nothing (a probe, not an error)."""
        rev = f"{check_rev(ref)}^{{commit}}"
        status, out, _ = self._git("rev-parse", "-q", "--verify", rev, check=False)
        return out.strip() if status == 0 and out.strip() else None

    def head_commit(self, ref: str = "HEAD") -> str:
        """The commit sha of `ref`; GitError when it does not exist."""
        sha = self.resolve(ref)
        if sha is None:
            raise GitError(f"{ref!r} does not name a commit in {self.root}")
        return sha

    def ref_commit(self, branch: str) -> str | None:
        """The commit `refs/heads/<branch>` names, read from the ref store without running git.

        A loose ref file, else `packed-refs`; anything unusual (a symbolic ref, a name that is
        not plain) asks git. Cheap enough to run before every commit and merge.
        """
        name = f"refs/heads/{branch}"
        if ".." in branch or branch.startswith("/") or "\\" in branch:
            return self.resolve(name)
        try:
            text = (self.common_dir / name).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            text = _packed_ref(self.common_dir, name) or ""
        except (OSError, UnicodeDecodeError):
            text = ""
        if FULL_SHA.fullmatch(text):
            return text
        return self.resolve(name)

    def branch_exists(self, name: str) -> bool:
        """Whether a local branch `name` exists, read from the ref store when it can be.

        A loose ref file, else `packed-refs` (git writes that before it drops a loose ref, so
        a concurrent `pack-refs` cannot hide a branch); anything unusual asks git.
        """
        ref = f"refs/heads/{name}"
        if ".." not in name and not name.startswith("/") and "\\" not in name:
            try:
                text = (self.common_dir / ref).read_text(encoding="ascii").strip()
            except FileNotFoundError:
                return _packed_ref(self.common_dir, ref) is not None
            except (OSError, UnicodeDecodeError):
                text = ""
            if FULL_SHA.fullmatch(text):
                return True
        return self._status("show-ref", "--verify", "--quiet", ref) == 0

    def _check_branch_name(self, name: str) -> None:
        # `--branch` would expand `@{-1}`; checking the full ref name does not.
        if name.startswith("-") or self._status("check-ref-format", f"refs/heads/{name}") != 0:
            raise GitError(f"{name!r} is not a valid branch name; build names with slugify()")
        refs = self._run("for-each-ref", "--format=%(refname)", "refs/heads/").splitlines()
        for ref in refs:
            other = ref.removeprefix("refs/heads/")
            if name.startswith(f"{other}/") or other.startswith(f"{name}/"):
                raise GitError(
                    f"branch {name!r} cannot coexist with existing branch {other!r}: git cannot "
                    "have a branch that is also a folder of branches; use sibling names such as "
                    "'feature/<slug>' and 'agent/<slug>/<role>/<task>'"
                )

    def create_branch(self, name: str, start_point: str = "HEAD") -> str:
        """Create `name` at `start_point` without checking anything out; returns its sha."""
        self._check_branch_name(name)
        with self._lock:
            if self.branch_exists(name):
                raise GitError(f"branch {name!r} already exists in {self.root}")
            self._run("branch", "--no-track", name, check_rev(start_point))
        return self.head_commit(f"refs/heads/{name}")

    def update_branch_ref(self, branch: str, new_commit: str, *, expected_old: str) -> None:
        """Fast-forward `branch` to `new_commit` only if it still points at `expected_old`.

        Refuses when the branch is checked out in any worktree, since moving it would change
        what that working tree (possibly the user's) thinks HEAD is.
        """
        ref = f"refs/heads/{branch}"
        with self._lock:
            where = self.branch_checked_out_in(branch)
            if where is not None:
                raise GitError(
                    f"branch {branch!r} is checked out in {where}; refusing to move it under "
                    "that working tree (merge there instead)"
                )
            new_sha = self.head_commit(new_commit)
            old_sha = self.head_commit(expected_old)
            if not self.history.is_merged(old_sha, new_sha):
                raise GitError(f"{new_sha} is not a fast-forward of {branch!r} at {old_sha}")
            self._run("update-ref", "-m", "agent-team: fast-forward", ref, new_sha, old_sha)

    def branch_checked_out_in(self, branch: str) -> Path | None:
        """The worktree that has `branch` checked out, or None."""
        for worktree in self.worktrees.entries():
            if worktree.branch == branch:
                return worktree.path
        return None

    # -- ignoring files -----------------------------------------------------------------

    def exclude(self, pattern: str) -> bool:
        """Hide `pattern` from `git status` via the shared `info/exclude`, never .gitignore.

        Returns True when the line was added, False when it was already there.
        """
        line = pattern.strip()
        if not line or "\n" in line:
            raise GitError(f"invalid exclude pattern {pattern!r}")
        exclude_file = self.common_dir / "info" / "exclude"
        with self._lock:
            exclude_file.parent.mkdir(parents=True, exist_ok=True)
            text = exclude_file.read_text(encoding="utf-8") if exclude_file.exists() else ""
            if line in (existing.strip() for existing in text.splitlines()):
                return False
            prefix = "" if not text or text.endswith("\n") else "\n"
            with exclude_file.open("a", encoding="utf-8") as handle:
                handle.write(f"{prefix}{line}\n")
        return True

    # -- commits ------------------------------------------------------------------------------

    def commit_all(
        self,
        worktree: str | Path,
        message: str,
        *,
        author_name: str,
        author_email: str,
        verify: bool = True,
        rescue_branch: str | None = None,
    ) -> str | None:
        """Stage everything in `worktree` and commit it as the given agent.

        Returns the new sha, or None when there was nothing to commit. A failing hook raises
        GitError with the hook's output; with `rescue_branch`, the refused work is first saved
        on that branch (see `_rescue`) and CommitRefused is raised instead.
        """
        message = redact(message)  # agents' summaries end up in messages
        env = identity(author_name, author_email)
        expected = self.expected.get(Path(worktree))
        if expected is not None:
            check_worktree(self, Path(worktree), expected)
        self._run("add", "--all", "--", ".", *JUNK_PATHSPECS, cwd=worktree)
        staged = split_z(self._run("diff", "--cached", "--name-only", "-M", "-z",
                                   "--no-ext-diff", cwd=worktree))
        if not staged:
            return None
        args = ["--no-verify"] if not verify else []
        status, out, err = self._git(
            "commit", "-q", *args, "-m", message, cwd=worktree, env=env, check=False
        )
        if status != 0:
            output = "\n".join(t.strip() for t in (err, out) if t.strip()) or "no output"
            if rescue_branch is None:
                raise GitError(f"`git commit` failed in {worktree} (exit {status}): {output}")
            branch, sha = self._rescue(worktree, rescue_branch, message, env)
            raise CommitRefused(
                f"git refused the commit in {worktree} (exit {status}; a pre-commit or "
                f"commit-msg hook, usually): {output[-2000:]}. The work was saved without hooks as "
                f"{sha[:10]} on branch {branch}, which is never merged; the worktree was reset "
                "to its last commit.",
                branch=branch,
                sha=sha,
            )
        # The new tip and its parent from the ref and object stores: no git process.
        tip = self.ref_commit(expected.branch) if expected is not None else None
        parents = loose_commit_parents(self.common_dir, tip) if tip else None
        if tip is None or parents is None:
            sha, parent = self.head_and_parent(worktree)
        else:
            sha, parent = tip, (parents[0] if parents else None)
        if expected is not None:
            self._advance_expected(Path(worktree), expected, sha, parent)
        if parent is not None and not (verify and set(COMMIT_HOOKS) & set(self.guard.hooks)):
            # What was staged is what the commit changed, unless a hook staged more.
            self.history.remember_changed(parent, sha, staged)
        return sha

    def head_and_parent(self, worktree: str | Path) -> tuple[str, str | None]:
        """HEAD of `worktree` and its first parent (None for a root commit), in one git call."""
        status, out, _ = self._git("rev-parse", "HEAD", "HEAD^1", cwd=worktree, check=False)
        lines = out.split() if status == 0 else []
        if len(lines) == 2:
            return lines[0], lines[1]
        return self._run("rev-parse", "HEAD", cwd=worktree).strip(), None

    def _advance_expected(self, worktree: Path, expected: Expected, sha: str,
                          parent: str | None = None) -> None:
        """Record the worktree's new commit, after checking it came from the expected one."""
        if parent is None:
            parent = self.resolve(f"{sha}^1")
        if parent != expected.head:
            raise IntegrityError(
                f"Integrity check failed in {worktree}: the new commit {sha} does not follow "
                f"{expected.head}; the commit is kept on {expected.branch} for you to inspect.",
                worktree=worktree, reason="unexpected parent",
            )
        self.expected.set(worktree, Expected(expected.branch, sha, expected.admin_dir))

    def _expect(self, worktree: Path, branch: str) -> None:
        """Start expecting `worktree` on `branch` at its current commit."""
        admin = self._admin_dir(worktree)
        sha = self.ref_commit(branch)
        if admin is not None and sha is not None:
            self.expected.set(worktree, Expected(branch, sha, admin))

    def _rescue(
        self, worktree: str | Path, branch: str, message: str, env: Mapping[str, str]
    ) -> tuple[str, str]:
        """Save what is staged in `worktree` as a commit on a new branch, bypassing hooks.

        `commit-tree` runs no hooks and moves no branch, so the worktree's own branch keeps
        only commits that passed them. The worktree is then reset, so it can be removed.
        """
        self._run("add", "--all", "--", ".", *JUNK_PATHSPECS, cwd=worktree)
        tree = self._run("write-tree", cwd=worktree).strip()
        parent = self._run("rev-parse", "HEAD", cwd=worktree).strip()
        note = "\n\nSaved by agent-team without running hooks: a hook refused this commit.\n"
        sha = self._run(
            "commit-tree", tree, "-p", parent, "-m", message.rstrip() + note, cwd=worktree, env=env
        ).strip()
        with self._lock:
            name, number = branch, 1
            while self.branch_exists(name):
                number += 1
                name = f"{branch}-{number}"
            self.create_branch(name, sha)
        self.reset_worktree(worktree, "HEAD")
        return name, sha

    def reset_worktree(self, worktree: str | Path, commit: str) -> None:
        """Point a worktree's branch back at `commit`, discarding its uncommitted changes.

        Only for the orchestrator's own worktrees, after their work was saved elsewhere.
        """
        directory = Path(worktree).expanduser().resolve()
        self._run("reset", "--hard", "--quiet", check_rev(commit), cwd=directory)
        self._run("clean", "-fd", "--quiet", cwd=directory)
        expected = self.expected.get(directory)
        if expected is not None:
            self._expect(directory, expected.branch)

    def soft_reset(self, worktree: str | Path, commit: str) -> None:
        """Move the worktree's branch back to `commit`, keeping its changes staged."""
        self._run("reset", "--soft", "--quiet", commit, cwd=worktree)

