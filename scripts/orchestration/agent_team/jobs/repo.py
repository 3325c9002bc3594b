"""The git side of a job: its repository on this machine, task branches, and merges.

A job either names a directory on this machine (`project_dir`, one machine) or a remote URL
(several machines). In the second case every worker keeps its own clone under its work
directory, cuts task branches from the remote's job branch, and pushes task and job branches
back; the push of the job branch happens under the database's job lock, so it is always a
fast-forward and merges never race.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git

from ..errors import GitError
from ..git_merge import MergeResult
from ..git_workspace import GitWorkspace, slugify
from .records import JobRecord, JobTask

WORKTREES = Path(".ai-agents") / "worktrees"
CLONES = Path(".ai-agents") / "clones"
MERGER_NAME = "agent-team"
MERGER_EMAIL = "merge@agent-team.invalid"


class MergeConflict(GitError):
    """A task branch conflicts with the job branch and the manager could not resolve it; the
    task fails and its branch is kept."""

    def __init__(self, branch: str, files: list[str], reason: str = "") -> None:
        why = f"; the manager could not resolve it: {reason}" if reason else ""
        super().__init__(f"{branch} conflicts with the job branch in: {', '.join(files)}{why}; "
                         "the merge was aborted and the task branch kept")
        self.files = files
        self.reason = reason


#: resolve(merge worktree, conflicted merge) -> (commit, "") when resolved, (None, why) if not.
Resolver = Callable[[Path, MergeResult], tuple[str | None, str]]


def task_branch(job: JobRecord, task: JobTask, fence: int) -> str:
    """One branch per attempt, so a late attempt's work never lands on another's branch."""
    return f"{job.job_branch}-tasks/{task.id}-a{fence}-{slugify(task.role, 20)}"


@dataclass
class JobRepository:
    """The job's repository as seen from one worker; `remote` is None for a local job."""

    workspace: GitWorkspace
    job: JobRecord
    remote: str | None

    @classmethod
    def prepare(cls, job: JobRecord, work_dir: Path, worker_id: str = "") -> JobRepository:
        """Open the job's repository: its project directory, or this worker's own clone."""
        if job.remote_url:
            clone = work_dir / CLONES / job.id / slugify(worker_id or "worker", 60)
            if not (clone / ".git").exists():
                shutil.rmtree(clone, ignore_errors=True)
                clone.parent.mkdir(parents=True, exist_ok=True)
                try:
                    git.Repo.clone_from(job.remote_url, clone, no_checkout=False)
                except git.exc.GitCommandError as exc:
                    raise GitError(f"cannot clone {job.remote_url}: {exc.stderr.strip()}") from exc
            repo = cls(GitWorkspace(clone), job, "origin")
        else:
            if not job.project_dir or not Path(job.project_dir).is_dir():
                raise GitError(
                    f"job {job.id} has no remote URL and its project {job.project_dir} is not "
                    "on this machine; create the job with a remote_url to use several machines"
                )
            repo = cls(GitWorkspace(job.project_dir), job, None)
        repo.workspace.exclude(".ai-agents/")
        return repo

    @property
    def root(self) -> Path:
        return self.workspace.root

    def refresh(self) -> str:
        """Bring the job branch up to date (from the remote); returns its commit."""
        if self.remote is not None:
            branch = self.job.job_branch
            self.workspace.repo.git.fetch(
                "--quiet", self.remote, f"+refs/heads/{branch}:refs/remotes/{self.remote}/{branch}")
            sha = self.workspace.head_commit(f"refs/remotes/{self.remote}/{branch}")
            self.workspace.repo.git.update_ref(f"refs/heads/{branch}", sha)
            return sha
        if not self.workspace.branch_exists(self.job.job_branch):
            base = self.job.base_commit or self.job.base_branch or "HEAD"
            ensure_job_branch(self.workspace, self.job.job_branch, base)
        return self.workspace.head_commit(f"refs/heads/{self.job.job_branch}")

    def start_task(self, branch: str) -> tuple[Path, str]:
        """A fresh worktree on `branch`, cut from the job branch; (path, start commit)."""
        start = self.refresh()
        path = self.root / WORKTREES / branch.replace("/", "__")
        self._drop_worktree(path)
        if self.workspace.branch_exists(branch):
            self.workspace.repo.git.branch("-D", branch)
        self.workspace.worktrees.add(path, branch, start_point=start)
        return path, start

    def has_file(self, ref: str, path: str) -> bool:
        """Whether `path` exists in the tree of `ref` (an expected output check)."""
        status = self.workspace.repo.git.cat_file(
            "-e", f"{ref}:{path}", with_extended_output=True, with_exceptions=False)[0]
        return status == 0

    def merge_task(self, branch: str, message: str, resolve: Resolver | None = None) -> str:
        """Merge `branch` into the job branch; call only under the job's merge lock.

        A conflict goes to `resolve` (the manager, with tools, in the merge worktree); when it
        is not resolved the merge is aborted and MergeConflict raised. Returns the job branch's
        new head. On a remote job, the task branch and the job branch are pushed (the job
        branch as a fast-forward, which the lock guarantees).
        """
        self.refresh()
        path = self.root / WORKTREES / f"{self.job.job_branch.replace('/', '__')}-merge"
        self._drop_worktree(path)
        self.workspace.worktrees.add(path, self.job.job_branch)
        try:
            result = self.workspace.merges.merge(path, branch, message, author_name=MERGER_NAME,
                                          author_email=MERGER_EMAIL)
            if result.status == "conflict":
                commit, reason = resolve(path, result) if resolve else (None, "")
                if commit is None:
                    self.workspace.merges.abort(path)
                    raise MergeConflict(branch, result.conflicts, reason)
        finally:
            self._drop_worktree(path)
        commit = self.workspace.head_commit(f"refs/heads/{self.job.job_branch}")
        if self.remote is not None:
            self.workspace.repo.git.push("--quiet", self.remote, f"refs/heads/{branch}",
                                         f"refs/heads/{self.job.job_branch}")
        return commit

    def merged_by(self, commit: str) -> str | None:
        """The job branch's commit that brought `commit` in, when it is there (the merge
        commit, or `commit` itself when it was already in the job's tree); None if it is not."""
        branch = f"refs/heads/{self.job.job_branch}"
        git_cmd = self.workspace.repo.git
        known = git_cmd.cat_file("-e", f"{commit}^{{commit}}", with_extended_output=True,
                                 with_exceptions=False)[0] == 0
        if not known or git_cmd.merge_base("--is-ancestor", commit, branch,
                                           with_extended_output=True,
                                           with_exceptions=False)[0] != 0:
            return None
        lines = git_cmd.rev_list("--ancestry-path", "--parents", f"{commit}..{branch}")
        for line in reversed(lines.splitlines()):
            sha, *parents = line.split()
            if commit in parents:
                return sha
        return commit

    def keep_branch(self, branch: str) -> None:
        """Make an unmerged attempt's branch visible to everyone (pushed on remote jobs)."""
        if self.remote is not None and self.workspace.branch_exists(branch):
            self.workspace.repo.git.push("--quiet", "--force", self.remote,
                                         f"refs/heads/{branch}")

    def finish_task(self, path: Path) -> None:
        """Remove the task's worktree; its branch stays."""
        self._drop_worktree(path)

    def _drop_worktree(self, path: Path) -> None:
        if path.exists() or any(w.path == path for w in self.workspace.worktrees.entries()):
            self.workspace.worktrees.remove(path, force=True)
        self.workspace.worktrees.prune()


def ensure_job_branch(workspace: GitWorkspace, job_branch: str, base: str,
                      remote_url: str | None = None) -> str:
    """Create the job branch at `base` (and on the remote); returns the base commit."""
    sha = workspace.head_commit(base)
    if remote_url:
        workspace.repo.git.push("--quiet", remote_url, f"{sha}:refs/heads/{job_branch}")
    elif not workspace.branch_exists(job_branch):
        workspace.create_branch(job_branch, sha)
    return sha
