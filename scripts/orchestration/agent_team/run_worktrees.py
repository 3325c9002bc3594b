"""The worktrees a run owns: one per task, the integration checkout, and their cleanup."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from .errors import CommitRefused, GitError
from .records import note
from .run_context import RunContext
from .state_checks import claim_branch
from .steps_task import commit_task
from .task_record import TaskRecord
from .team import Team
from .worktree_pool import WorktreePool
from .worktree_setup import SetupReport, SetupSettings, prepare_worktree, release_submodules


def feature_dir(team: Team, run: RunContext) -> Path:
    return team.worktree_root / run.slug


def task_worktree(team: Team, run: RunContext, task: TaskRecord, branch: str) -> Path:
    """The task's worktree on `branch`, cut from the feature branch as it is now.

    A worktree an interrupted run left on that branch is reused (its uncommitted work is
    committed first); a directory that is no longer a worktree is moved aside, never deleted.
    With a pool (`run.pool`), a parked worktree of an earlier task is switched to `branch`
    rather than a new one checked out (see `worktree_pool.py`).
    """
    path = feature_dir(team, run) / "tasks" / task["task_id"]
    admin = team.git._admin_dir(path)
    registered = admin is not None and (admin / "gitdir").is_file()  # no `worktree list`
    if registered and team.git.worktrees.branch_of(path) == branch:
        try:
            commit_task(team, run, task, path, "Work recovered from an interrupted run.", branch)
        except CommitRefused as exc:
            run.log(f"{task['task_id']}: {exc}")
        return path
    if not registered and path.exists():
        aside = path.with_name(f"{path.name}.orphaned-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        run.log(f"{path} is not a git worktree any more (deleted during an earlier run?); "
                f"its files were moved to {aside}.")
    exists = team.git.branch_exists(branch)
    claim_branch(run, branch, exists=exists)  # before git creates it
    if run.pool is not None and not registered:
        reused = run.pool.take(path, branch, start_point=run.feature_branch, exists=exists)
        for line in run.pool.dropped:
            run.log(f"Worktree pool: gave up a parked worktree ({line}).")
        run.pool.dropped.clear()
        if reused is not None:
            return reused
    worktree = team.git.worktrees.add(path, branch, start_point=run.feature_branch)
    report = _prepare(team, run, worktree)
    if run.pool is not None and _reusable(report):
        run.pool.poolable(worktree, [line.split(" -> ", 1)[0] for line in report.linked])
    return worktree


def _reusable(report: SetupReport) -> bool:
    """Whether a worktree's setup is one a parked copy keeps: links only (see worktree_pool)."""
    return not (report.submodules or report.copied or report.commands or report.problems
                or any("copied from" in line for line in report.hooks))


def prepared(team: Team, run: RunContext, worktree: Path) -> Path:
    """Make a new worktree work like the checkout: submodules, copied files, hooks, setup
    commands, dependency directories. What could not be done is logged, never raised."""
    _prepare(team, run, worktree)
    return worktree


def _prepare(team: Team, run: RunContext, worktree: Path) -> SetupReport:
    coordination = team.settings.coordination
    report = prepare_worktree(team.project_dir, worktree, SetupSettings(
        commands=coordination.worktree_setup, copy=coordination.worktree_copy,
        timeout=coordination.command_timeout_seconds))
    for line in report.lines():
        run.log(f"{worktree.name}: {line}")
    return report


def open_integration_worktree(team: Team, run: RunContext) -> Path:
    """The feature branch's checkout for merges; an interrupted run's one is reused.

    Clean merges move the feature branch without writing its files (`merge_without_checkout`);
    the files catch up before the tests run (`checkout_integration`) or a conflict is resolved
    there. With a worktree pool no file is written now: at the end a parked task worktree,
    which differs from the merged branch by a few files, becomes the integration checkout.
    """
    path = feature_dir(team, run) / "integration"
    for info in team.git.worktrees.entries():
        if info.path == path.resolve() and info.branch == run.feature_branch:
            if not team.git.worktrees.populated(path):  # opened lazily by the crashed run
                run.integration_setup_pending = True
            if team.git.merges.in_progress(path):
                team.git.merges.abort(path)
            team.git.reset_worktree(path, "HEAD")
            team.git.merges.merge_without_checkout(path)
            return path
    if run.pool is None:
        worktree = prepared(team, run, team.git.worktrees.add(path, run.feature_branch))
        team.git.merges.merge_without_checkout(worktree)
        return worktree
    worktree = team.git.worktrees.add(path, run.feature_branch, checkout=False)
    team.git.merges.stale.add(worktree)  # any git command there writes the files first
    run.integration_setup_pending = True
    if not team.git.merges.merge_without_checkout(worktree):  # merges need its files
        checkout_integration(team, run, worktree)
    return worktree


def checkout_integration(team: Team, run: RunContext, worktree: Path) -> None:
    """The merged branch's files in the integration worktree, set up like the checkout.

    A worktree opened without files takes a parked task worktree when one is free (switching
    it writes only the files that differ); otherwise git writes them all.
    """
    if not run.integration_setup_pending:
        team.git.merges.sync(worktree)
        return
    if not team.git.worktrees.populated(worktree) and run.pool is not None and run.pool.free:
        team.git.merges.stale.discard(worktree)
        team.git.worktrees.remove(worktree, force=True)  # holds no file, nothing is lost
        taken = run.pool.take(worktree, run.feature_branch, start_point=run.feature_branch,
                              exists=True)
        for line in run.pool.dropped:
            run.log(f"Worktree pool: gave up a parked worktree ({line}).")
        run.pool.dropped.clear()
        if taken is None:
            team.git.worktrees.add(worktree, run.feature_branch)
            _prepare(team, run, worktree)
    else:
        team.git.merges.sync(worktree)
        _prepare(team, run, worktree)
    run.integration_setup_pending = False


def remove_task_worktree(team: Team, run: RunContext, path: Path) -> None:
    """Remove a task's worktree once its work is saved, or park it for the next task."""
    if run.pool is not None and run.pool.park(path):
        return
    release_submodules(path)
    try:
        team.git.worktrees.remove(path)
    except GitError as exc:  # dirty or locked: keep it, say so
        run.log(f"Kept worktree {path}: {exc}")


def remove_own_worktree(team: Team, run: RunContext, path: Path | None, *,
                        force: bool) -> None:
    """Remove a worktree of the orchestrator's (feature or integration checkout).

    `force` is for a run that ended normally: all work is committed and what is left are files
    the test command wrote. After an error the worktree is kept when it has changes.
    """
    if path is None:
        return
    if not team.git.is_worktree(path):  # deleted (and maybe re-created) during the run
        team.git.worktrees.prune()
        if path.exists():
            run.log(f"Kept {path}: it is no longer a git worktree (deleted during the run?).")
        return
    if not team.git.worktrees.populated(path):  # never written: nothing in it to keep
        team.git.merges.stale.discard(path.resolve())
        force = True
    if team.git.merges.in_progress(path):
        team.git.merges.abort(path)
    release_submodules(path)
    try:
        team.git.worktrees.remove(path, force=force)
    except GitError as exc:
        run.log(f"Kept worktree {path}: {exc}")


def remove_empty_dirs(root: Path) -> None:
    """Delete empty directories left under `root` (and `root` itself when empty)."""
    if not root.is_dir():
        return
    found: list[Path] = []
    for current, subdirs, files in os.walk(root):
        if ".git" in files or ".git" in subdirs:  # a worktree that was kept: leave it be
            subdirs.clear()
            continue
        found.append(Path(current))
    for directory in reversed(found):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


def report_stale_worktrees(team: Team, run: RunContext) -> None:
    """Tell the user about worktrees an earlier, crashed run left behind; delete nothing."""
    for line in team.git.worktrees.prune():
        run.log(f"Pruned worktree record: {line}")
    if not team.worktree_root.exists():
        return
    for info in team.git.worktrees.stale(team.worktree_root):
        state = []
        if info.dirty:
            state.append("uncommitted changes")
        if info.unmerged:
            state.append(f"{info.unmerged} unmerged commit(s)")
        message = (
            f"Stale worktree from an earlier run: {info.path} on {info.branch or info.head}"
            f" ({', '.join(state) or 'clean'}). Kept; remove it with "
            f"`git worktree remove {info.path}` once you no longer need it.")
        run.log(message)
        note(run, "orchestrator", None, "stale_worktree", message)


def clear_stale_locks(team: Team, run: RunContext) -> None:
    """Remove index locks a killed run's git left in this feature's worktrees."""
    root = feature_dir(team, run).resolve()
    for info in team.git.worktrees.entries()[1:]:
        if root in info.path.parents:
            for lock in team.git.worktrees.clear_stale_locks(info.path):
                run.log(f"Removed {lock}, left by a git command of the interrupted run.")


def create_feature_branch(team: Team, run: RunContext) -> None:
    """Create `feature/<slug>` at the base commit."""
    team.git.create_branch(run.feature_branch, run.base_commit)
    run.log(f"Feature branch {run.feature_branch} created from {run.base_branch}.")


def drain_pool(team: Team, run: RunContext) -> None:
    """Remove the worktrees the run parked for reuse; at its end, next to the integration one."""
    if run.pool is None:
        return
    for line in run.pool.drain():
        run.log(line)
    run.pool = None


def open_pool(team: Team, run: RunContext) -> None:
    """Start reusing task worktrees for this run (slots a crashed run parked are adopted)."""
    if run.pool is None:
        run.pool = WorktreePool(team.git, feature_dir(team, run) / "pool")
