"""A thin GitPython wrapper: branches, worktrees, commits and merges for the agent team.

Every task works in its own linked worktree, so the user's checked-out branch, index and
uncommitted changes are never touched: nothing here checks out, resets or stages anything in the
main working tree. All git calls go through `repo.git.<cmd>` (or a `git.Git` bound to one
worktree) and failures become `GitError` carrying git's own stderr.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import git
from git.exc import GitCommandError, GitCommandNotFound, InvalidGitRepositoryError, NoSuchPathError

from .errors import GitError, NotAGitRepository
from .redaction import redact

_GIT_ERRORS = (GitCommandError, GitCommandNotFound)
_OPEN_ERRORS = (InvalidGitRepositoryError, NoSuchPathError)
_CONFLICT_MARKERS = (b"<<<<<<<", b">>>>>>>")
_BINARY_SNIFF = 8000

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _repo_lock(common_dir: Path) -> threading.RLock:
    """One lock per repository, shared by every GitWorkspace opened on it in this process."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(common_dir), threading.RLock())


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


@dataclass(frozen=True)
class WorktreeInfo:
    """One entry of `git worktree list --porcelain`.

    `dirty` and `unmerged` are only filled in by `GitWorkspace.stale_worktrees`; None elsewhere
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


@dataclass(frozen=True)
class MergeResult:
    """Outcome of `GitWorkspace.merge`; on "conflict" the merge is left in progress."""

    status: Literal["merged", "conflict", "up_to_date"]
    commit: str | None = None
    conflicts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LogEntry:
    """A one-line commit summary for reports and prompts."""

    sha: str
    author_name: str
    author_email: str
    date: str
    subject: str


def _unformat(stream: str, label: str) -> str:
    """GitPython pre-formats stderr/stdout in its exception; recover git's own text."""
    prefix = f"\n  {label}: '"
    if stream.startswith(prefix) and stream.endswith("'"):
        return stream[len(prefix) : -1]
    return stream


def _error(exc: GitCommandError | GitCommandNotFound, where: Path) -> GitError:
    command = " ".join(str(part) for part in exc.command)
    if len(command) > 200:
        command = command[:197] + "..."
    output = "\n".join(
        text.strip()
        for text in (_unformat(exc.stderr, "stderr"), _unformat(exc.stdout, "stdout"))
        if text.strip()
    )
    return GitError(f"`{command}` failed in {where} (exit {exc.status}): {output or 'no output'}")


def _identity(name: str, email: str) -> dict[str, str]:
    """Author and committer for one call, so commits work without user.name configured."""
    if not name.strip() or not email.strip():
        raise GitError("a commit needs a non-empty author name and email")
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def _extra_config(settings: Mapping[str, str]) -> dict[str, str]:
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


def _is_binary(data: bytes) -> bool:
    if b"\0" in data[:_BINARY_SNIFF]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _split_z(output: str) -> list[str]:
    return [item for item in output.split("\0") if item]


def _check_rev(ref: str) -> str:
    """Refuse revisions git would parse as options."""
    if not ref or ref.startswith("-"):
        raise GitError(f"invalid revision {ref!r}")
    return ref


class CommitRefused(GitError):
    """A hook refused an agent's commit; the work was saved on `branch` at `sha` instead."""

    def __init__(self, message: str, *, branch: str, sha: str) -> None:
        super().__init__(message)
        self.branch = branch
        self.sha = sha


class GitWorkspace:
    """The orchestrator's only door to git for one repository."""

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
        self._lock = _repo_lock(self.common_dir)
        self._parallel_checkout: bool | None = None

    @property
    def repo(self) -> git.Repo:
        """The underlying GitPython repository, for callers that need more than this class."""
        return self._repo

    @staticmethod
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
        """Run `git <cmd>` through GitPython; (status, stdout, stderr), GitError when checked."""
        runner, where = self._runner(cwd)
        try:
            status, out, err = getattr(runner, cmd)(
                *args,
                env=dict(env) if env else None,
                with_extended_output=True,
                with_exceptions=check,
                **options,
            )
        except _GIT_ERRORS as exc:
            raise _error(exc, where) from exc
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
        rev = f"{_check_rev(ref)}^{{commit}}"
        status, out, _ = self._git("rev-parse", "-q", "--verify", rev, check=False)
        return out.strip() if status == 0 and out.strip() else None

    def head_commit(self, ref: str = "HEAD") -> str:
        """The commit sha of `ref`; GitError when it does not exist."""
        sha = self.resolve(ref)
        if sha is None:
            raise GitError(f"{ref!r} does not name a commit in {self.root}")
        return sha

    def branch_exists(self, name: str) -> bool:
        """Whether a local branch `name` exists."""
        return self._status("show-ref", "--verify", "--quiet", f"refs/heads/{name}") == 0

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
            self._run("branch", "--no-track", name, _check_rev(start_point))
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
            if not self.is_merged(old_sha, new_sha):
                raise GitError(f"{new_sha} is not a fast-forward of {branch!r} at {old_sha}")
            self._run("update-ref", "-m", "agent-team: fast-forward", ref, new_sha, old_sha)

    def branch_checked_out_in(self, branch: str) -> Path | None:
        """The worktree that has `branch` checked out, or None."""
        for worktree in self.list_worktrees():
            if worktree.branch == branch:
                return worktree.path
        return None

    # -- worktrees --------------------------------------------------------------------------

    def add_worktree(
        self, path: str | Path, branch: str, *, start_point: str | None = None
    ) -> Path:
        """Check `branch` out in a new worktree at `path`, creating the branch when missing.

        An existing branch is checked out as it is and `start_point` is ignored; git refuses
        when that branch is already checked out in another worktree. A failing post-checkout
        hook makes git exit non-zero after the worktree was made; that worktree is used.
        """
        target = Path(path).expanduser().resolve()
        self._check_branch_name(branch)
        env = self._checkout_env()
        with self._lock:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                if self.branch_exists(branch):
                    self._run("worktree", "add", str(target), branch, env=env)
                else:
                    start = _check_rev(start_point or "HEAD")
                    self._run(
                        "worktree", "add", "--no-track", "-b", branch, str(target), start,
                        env=env,
                    )
            except GitError:
                made = self.is_worktree(target) and any(
                    info.path == target and info.branch == branch
                    for info in self.list_worktrees()
                )
                if not made:
                    raise
        return target

    def clear_stale_locks(self, worktree: str | Path) -> list[Path]:
        """Remove `index.lock` of one of the orchestrator's worktrees, left by a killed git.

        Only for worktrees no git process can be using: the caller holds the run lock and no
        run of its own is under way. The user's own index is never touched.
        """
        admin = self._admin_dir(worktree)
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
            configured = self._status("config", "--get", "checkout.workers") == 0
            self._parallel_checkout = not configured
        if not self._parallel_checkout:
            return None
        return _extra_config({"checkout.workers": "0"})

    def remove_worktree(self, path: str | Path, *, force: bool = False) -> None:
        """Remove a worktree, keeping its branch; uncommitted work is kept unless `force`."""
        target = Path(path).expanduser().resolve()
        with self._lock:
            if not target.exists():
                self.prune_worktrees()
                return
            if force:
                self._run("worktree", "remove", "--force", str(target))
                return
            # git checks for changes itself (one status scan of the whole tree); the list for
            # the message is only computed when it refuses. Untracked files always count.
            try:
                self._run(
                    "worktree", "remove", str(target),
                    env=_extra_config({"status.showUntrackedFiles": "normal"}),
                )
            except GitError:
                changes = self._dirty_paths(target) if target.is_dir() else []
                if changes:
                    raise GitError(
                        f"worktree {target} has uncommitted changes ({', '.join(changes[:10])}); "
                        "commit them or pass force=True to discard them"
                    ) from None
                raise

    def list_worktrees(self) -> list[WorktreeInfo]:
        """All worktrees of the repository, the main one first."""
        output = self._run("worktree", "list", "--porcelain")
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

    def prune_worktrees(self) -> list[str]:
        """Drop administrative entries of worktrees whose directories are gone.

        Returns git's own lines, e.g. "Removing worktrees/x: gitdir file points to non-existent
        location". Locked worktrees are never pruned (git's rule).
        """
        with self._lock:
            _, _, err = self._git("worktree", "prune", "--verbose")
        return [line.strip() for line in err.splitlines() if line.startswith("Removing ")]

    def stale_worktrees(self, root: str | Path, *, into: str = "HEAD") -> list[WorktreeInfo]:
        """Worktrees left under `root` by an earlier run, with what removing them would lose.

        `dirty` says whether the directory holds uncommitted changes (None when it is gone);
        `unmerged` counts commits of its HEAD not reachable from `into`.
        """
        base = Path(root).expanduser().resolve()
        into_sha = self.head_commit(into)
        found: list[WorktreeInfo] = []
        for worktree in self.list_worktrees()[1:]:
            resolved = worktree.path.resolve()
            if resolved != base and base not in resolved.parents:
                continue
            dirty = None
            if resolved.is_dir() and not worktree.prunable:
                dirty = bool(self._dirty_paths(resolved))
            unmerged = None
            if worktree.head:
                unmerged = int(self._run("rev-list", "--count", f"{into_sha}..{worktree.head}"))
            found.append(replace(worktree, dirty=dirty, unmerged=unmerged))
        return found

    def _dirty_paths(self, worktree: Path) -> list[str]:
        output = self._run(
            "status",
            "--porcelain",
            "--untracked-files=normal",
            "--ignore-submodules=none",
            cwd=worktree,
        )
        return [line[3:] for line in output.splitlines() if line.strip()]

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

    # -- commits and history ----------------------------------------------------------------

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
        env = _identity(author_name, author_email)
        self._run("add", "--all", "--", ".", *JUNK_PATHSPECS, cwd=worktree)
        if self._status("diff", "--cached", "--quiet", cwd=worktree) == 0:
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
        return self._run("rev-parse", "HEAD", cwd=worktree).strip()

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

    def changed_files(self, base: str, head: str) -> list[str]:
        """Paths that differ between two commits; a rename is listed once, by its new path."""
        rng = f"{_check_rev(base)}..{_check_rev(head)}"
        return _split_z(self._run("diff", "--name-only", "-M", "-z", "--no-ext-diff", rng))

    def merge_base(self, a: str, b: str) -> str:
        """The best common ancestor of two commits."""
        return self._run("merge-base", _check_rev(a), _check_rev(b)).strip()

    def tracked_files(self, ref: str = "HEAD", *, limit: int | None = None) -> list[str]:
        """Files in a commit's tree, sorted; the manager sees them when it plans."""
        files = _split_z(self._run("ls-tree", "-r", "-z", "--name-only", _check_rev(ref)))
        return files[:limit] if limit is not None else files

    def reset_worktree(self, worktree: str | Path, commit: str) -> None:
        """Point a worktree's branch back at `commit`, discarding its uncommitted changes.

        Only for the orchestrator's own worktrees, after their work was saved elsewhere.
        """
        directory = Path(worktree).expanduser().resolve()
        self._run("reset", "--hard", "--quiet", _check_rev(commit), cwd=directory)
        self._run("clean", "-fd", "--quiet", cwd=directory)

    def diff_stat(self, base: str, head: str) -> str:
        """`git diff --stat` between two commits, for reports."""
        rng = f"{_check_rev(base)}..{_check_rev(head)}"
        return self._run("diff", "--stat", "-M", "--no-color", "--no-ext-diff", rng)

    def log(self, ref: str = "HEAD", n: int = 10) -> list[LogEntry]:
        """The newest `n` commits reachable from `ref` (a range like `a..b` works too)."""
        fmt = "%H%x1f%an%x1f%ae%x1f%aI%x1f%s%x1e"
        output = self._run("log", f"-n{int(n)}", f"--format={fmt}", _check_rev(ref), "--")
        entries = []
        for record in output.split("\x1e"):
            parts = record.strip("\n").split("\x1f")
            if len(parts) == 5:
                entries.append(LogEntry(*parts))
        return entries

    def is_merged(self, branch: str, into: str) -> bool:
        """Whether every commit of `branch` is already reachable from `into`."""
        status = self._status("merge-base", "--is-ancestor", _check_rev(branch), _check_rev(into))
        if status not in (0, 1):
            raise GitError(f"cannot compare {branch!r} with {into!r}: is either missing?")
        return status == 0

    def unmerged_commits(self, branch: str, into: str) -> int:
        """How many commits of `branch` are not yet in `into`."""
        rng = f"{_check_rev(into)}..{_check_rev(branch)}"
        return int(self._run("rev-list", "--count", rng).strip())

    # -- merging ----------------------------------------------------------------------------

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
        `conclude_merge` or undo it with `abort_merge`. Any other failure (local changes in the
        way, a refusing pre-merge-commit hook) leaves no merge in progress and raises GitError.
        """
        message = redact(message)  # agents' summaries end up in messages
        env = _identity(author_name, author_email)
        with self._lock:
            merged = self._status(
                "merge-base", "--is-ancestor", _check_rev(branch), "HEAD", cwd=worktree
            )
            if merged == 0:
                return MergeResult("up_to_date")
            try:
                self._run(
                    "merge", "--no-ff", "--no-edit", "-m", message, branch, cwd=worktree, env=env
                )
            except GitError as exc:
                if not self.merge_in_progress(worktree):
                    raise
                conflicts = self.unmerged_paths(worktree)
                if not conflicts:
                    self._run("merge", "--abort", cwd=worktree)
                    raise GitError(
                        f"{exc}\n(the merge stopped without conflicts; aborted)"
                    ) from exc
                return MergeResult("conflict", None, conflicts)
            return MergeResult("merged", self._run("rev-parse", "HEAD", cwd=worktree).strip())

    def merge_in_progress(self, worktree: str | Path) -> bool:
        """Whether `worktree` is in the middle of a merge (MERGE_HEAD exists)."""
        return self._status("rev-parse", "-q", "--verify", "MERGE_HEAD", cwd=worktree) == 0

    def unmerged_paths(self, worktree: str | Path) -> list[str]:
        """Paths the index still holds as conflicted."""
        output = self._run("diff", "--name-only", "--diff-filter=U", "-z", cwd=worktree)
        return sorted(set(_split_z(output)))

    def _stages(self, worktree: str | Path, path: str) -> dict[int, str]:
        output = self._run("ls-files", "-u", "-z", cwd=worktree)
        stages: dict[int, str] = {}
        for entry in _split_z(output):
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
            number: self._git(
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

    def resolve_conflict(
        self, worktree: str | Path, path: str, side: Literal["ours", "theirs"]
    ) -> None:
        """Settle one conflicted path by taking one side whole; the way to settle binaries."""
        stage = {"ours": 2, "theirs": 3}[side]
        stages = self._stages(worktree, path)
        if not stages:
            raise GitError(f"{path} is not in conflict in {worktree}")
        env = {"GIT_LITERAL_PATHSPECS": "1"}
        if stage in stages:
            self._run("checkout", f"--{side}", "--", path, cwd=worktree, env=env)
            self._run("add", "--", path, cwd=worktree, env=env)
        else:
            self._run("rm", "-q", "-f", "--", path, cwd=worktree, env=env)

    def abort_merge(self, worktree: str | Path) -> bool:
        """Undo a merge in progress; returns False when there was none."""
        with self._lock:
            if not self.merge_in_progress(worktree):
                return False
            self._run("merge", "--abort", cwd=worktree)
        return True

    def conclude_merge(
        self,
        worktree: str | Path,
        message: str,
        *,
        author_name: str,
        author_email: str,
    ) -> str:
        """Commit a resolved merge; refuses while any file still looks conflicted.

        A conflicted text file counts as resolved once its conflict markers are gone; binary,
        deleted or symlinked conflicted paths must be staged explicitly (resolve_conflict).
        """
        message = redact(message)  # agents' summaries end up in messages
        env = _identity(author_name, author_email)
        directory = Path(worktree).expanduser().resolve()
        with self._lock:
            if not self.merge_in_progress(directory):
                raise GitError(f"no merge in progress in {directory}")
            problems = self._unresolved(directory)
            if problems:
                raise GitError(
                    f"cannot conclude the merge in {directory}; still conflicted: "
                    + ", ".join(problems)
                )
            self._run("add", "--all", cwd=directory)
            self._run("commit", "-q", "--no-edit", "-m", message, cwd=directory, env=env)
            return self._run("rev-parse", "HEAD", cwd=directory).strip()

    def _unresolved(self, directory: Path) -> list[str]:
        unmerged = set(self.unmerged_paths(directory))
        touched = set(_split_z(self._run("diff", "--name-only", "-z", "HEAD", cwd=directory)))
        touched |= set(
            _split_z(self._run("ls-files", "--others", "--exclude-standard", "-z", cwd=directory))
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
